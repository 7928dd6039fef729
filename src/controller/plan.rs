//! The planner: a pure function from what was observed to what must be done.
//!
//! It decides which pods to create or remove, which instance is master (recording that intent
//! before anything is touched), who must follow it, and which role labels pods carry. Nothing here
//! talks to Kubernetes or Redis, so every decision is unit-tested.

use std::cmp::Reverse;

use crate::redis::{Address, REDIS_PORT, ReplicationInfo};
use crate::resources::RoleLabel;

/// One existing instance pod, as observed this round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedInstance {
    pub name: String,
    pub ordinal: u32,
    pub ip: Option<String>,
    /// The pod has a deletion timestamp: leave it alone, it is going.
    pub deleting: bool,
    /// The pod's Ready condition.
    pub pod_ready: bool,
    pub role_label: Option<RoleLabel>,
    /// `INFO replication`, or `None` when the instance could not be reached.
    pub redis: Option<ReplicationInfo>,
}

impl ObservedInstance {
    pub fn address(&self) -> Option<Address> {
        self.ip
            .as_ref()
            .map(|ip| Address::new(ip.clone(), REDIS_PORT))
    }

    fn reachable(&self) -> Option<&ReplicationInfo> {
        if self.deleting {
            return None;
        }
        self.redis.as_ref()
    }
}

/// What the status says about roles, as the planner needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordedRoles {
    pub current_master: Option<String>,
    pub master_address: Option<String>,
    pub epoch: i64,
    pub target_master: Option<String>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInput {
    pub replication: String,
    pub desired_instances: u32,
    pub recorded: RecordedRoles,
    pub instances: Vec<ObservedInstance>,
}

/// The master decision that must be written to status before any instance is touched.
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    pub master: String,
    pub address: Address,
    pub epoch: i64,
    /// A promotion follows; `false` when only the master's address changed.
    pub promotes: bool,
}

/// Why no master can act this round.
#[derive(Clone, Debug, PartialEq)]
pub enum MasterState {
    /// The master is known and acting.
    Acting { name: String, address: Address },
    /// No instance is reachable yet to become the first master.
    AwaitingBootstrap,
    /// The recorded master cannot be reached or is gone.
    Unavailable { name: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Ordinals whose pods must be created.
    pub create: Vec<u32>,
    /// Pods to remove because the set is scaling down.
    pub delete: Vec<String>,
    /// The master cannot be removed by a scale-down (yet): why.
    pub scale_down_blocked: Option<String>,
    pub master: MasterState,
    /// Written to status (optimistically) before the steps below.
    pub intent: Option<Intent>,
    /// `REPLICAOF NO ONE` on this instance, then verify it reports master.
    pub promote: Option<String>,
    /// Role labels that must change, removals of the master label first.
    pub relabel: Vec<(String, Option<RoleLabel>)>,
    /// Instances that must `REPLICAOF` the master.
    pub rewire: Vec<String>,
}

pub fn plan(input: &PlanInput) -> Plan {
    let (create, delete, scale_down_blocked) = plan_membership(input);
    let (master, intent, promote) = plan_master(input, &delete);
    let (rewire, relabel) = match &master {
        MasterState::Acting { name, address } => plan_followers(input, name, address, &delete),
        _ => (Vec::new(), demote_stray_master_labels(input)),
    };
    Plan {
        create,
        delete,
        scale_down_blocked,
        master,
        intent,
        promote,
        relabel,
        rewire,
    }
}

/// Pods to create (missing ordinals) and remove (ordinals beyond `instances`, never the master).
fn plan_membership(input: &PlanInput) -> (Vec<u32>, Vec<String>, Option<String>) {
    let create = (0..input.desired_instances)
        .filter(|o| input.instances.iter().all(|i| i.ordinal != *o))
        .collect();
    let master = input.recorded.current_master.as_deref();
    let mut delete = Vec::new();
    let mut blocked = None;
    for inst in &input.instances {
        if inst.ordinal < input.desired_instances || inst.deleting {
            continue;
        }
        if Some(inst.name.as_str()) == master {
            blocked = Some(format!(
                "scaling down to {} instances would remove the master {}; \
                 only replicas are removed until a switchover moves the master",
                input.desired_instances, inst.name
            ));
        } else {
            delete.push(inst.name.clone());
        }
    }
    (create, delete, blocked)
}

fn plan_master(
    input: &PlanInput,
    leaving: &[String],
) -> (MasterState, Option<Intent>, Option<String>) {
    let recorded = &input.recorded;
    let find = |name: &str| input.instances.iter().find(|i| i.name == name);

    if let Some(name) = recorded.current_master.as_deref() {
        let inst = find(name);
        match inst.and_then(|i| i.reachable().map(|r| (i, r))) {
            Some((inst, info)) if info.is_master() => {
                let Some(address) = inst.address() else {
                    return (unavailable(name), None, None);
                };
                // The master pod may have come back with a new IP: record where it is now.
                let intent = (recorded.master_address.as_deref() != Some(&address.to_string()))
                    .then(|| Intent {
                        master: name.to_string(),
                        address: address.clone(),
                        epoch: recorded.epoch,
                        promotes: false,
                    });
                let master = MasterState::Acting {
                    name: name.to_string(),
                    address,
                };
                return (master, intent, None);
            }
            Some((inst, _)) if recorded.target_master.as_deref() == Some(name) => {
                // Intent was recorded but the promotion did not finish: resume it, same epoch.
                let Some(address) = inst.address() else {
                    return (unavailable(name), None, None);
                };
                let master = MasterState::Acting {
                    name: name.to_string(),
                    address,
                };
                return (master, None, Some(name.to_string()));
            }
            // The recorded master restarted and came back fenced: elect again below, so the
            // instance holding the most data wins, never a restarted empty master by default.
            Some(_) => {}
            None => return (unavailable(name), None, None),
        }
    }

    match elect(input, leaving) {
        Some(best) => {
            let Some(address) = best.address() else {
                return (MasterState::AwaitingBootstrap, None, None);
            };
            let intent = Intent {
                master: best.name.clone(),
                address: address.clone(),
                epoch: recorded.epoch + 1,
                promotes: true,
            };
            let master = MasterState::Acting {
                name: best.name.clone(),
                address,
            };
            (master, Some(intent), Some(best.name.clone()))
        }
        None => (MasterState::AwaitingBootstrap, None, None),
    }
}

fn unavailable(name: &str) -> MasterState {
    MasterState::Unavailable {
        name: name.to_string(),
    }
}

/// Safety rule 4: the reachable instance with the greatest replication offset, then the lowest
/// ordinal. Instances leaving the set are never chosen.
fn elect<'a>(input: &'a PlanInput, leaving: &[String]) -> Option<&'a ObservedInstance> {
    input
        .instances
        .iter()
        .filter(|i| i.ip.is_some() && !leaving.contains(&i.name))
        .filter_map(|i| i.reachable().map(|info| (i, info.offset)))
        .min_by_key(|(i, offset)| (Reverse(*offset), i.ordinal))
        .map(|(i, _)| i)
}

/// Who must be pointed at the master, and the labels that follow from it. Non-master label
/// changes come first, so a stray master label is gone before the master's label is written.
fn plan_followers(
    input: &PlanInput,
    master: &str,
    master_address: &Address,
    leaving: &[String],
) -> (Vec<String>, Vec<(String, Option<RoleLabel>)>) {
    let mut rewire = Vec::new();
    let mut relabel = Vec::new();
    for inst in input.instances.iter().filter(|i| i.name != master) {
        let following = !inst.deleting && !leaving.contains(&inst.name);
        match inst.reachable().filter(|_| following) {
            Some(info) => {
                if info.following() != Some(master_address) {
                    rewire.push(inst.name.clone());
                }
                if inst.role_label != Some(RoleLabel::Replica) {
                    relabel.push((inst.name.clone(), Some(RoleLabel::Replica)));
                }
            }
            // Safety rule 1: only the master carries the master label.
            None if inst.role_label == Some(RoleLabel::Master) => {
                relabel.push((inst.name.clone(), None));
            }
            None => {}
        }
    }
    if let Some(inst) = input.instances.iter().find(|i| i.name == master)
        && inst.role_label != Some(RoleLabel::Master)
    {
        relabel.push((master.to_string(), Some(RoleLabel::Master)));
    }
    (rewire, relabel)
}

/// With no acting master, strip the master label from every pod but the recorded master.
fn demote_stray_master_labels(input: &PlanInput) -> Vec<(String, Option<RoleLabel>)> {
    input
        .instances
        .iter()
        .filter(|i| i.role_label == Some(RoleLabel::Master) && !is_recorded_master(input, &i.name))
        .map(|i| (i.name.clone(), None))
        .collect()
}

fn is_recorded_master(input: &PlanInput, name: &str) -> bool {
    input.recorded.current_master.as_deref() == Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::{FENCE_HOST, FENCE_PORT, Role};

    fn info(role: Role, offset: i64) -> ReplicationInfo {
        ReplicationInfo {
            role,
            offset,
            replid: "r".into(),
            replicas: vec![],
        }
    }

    fn fenced(offset: i64) -> Option<ReplicationInfo> {
        Some(info(
            Role::Replica {
                master: Address::new(FENCE_HOST, FENCE_PORT),
                link_up: false,
                sync_in_progress: false,
            },
            offset,
        ))
    }

    fn master(offset: i64) -> Option<ReplicationInfo> {
        Some(info(Role::Master, offset))
    }

    fn replica_of(ordinal: u32, offset: i64) -> Option<ReplicationInfo> {
        Some(info(
            Role::Replica {
                master: addr(ordinal),
                link_up: true,
                sync_in_progress: false,
            },
            offset,
        ))
    }

    fn addr(ordinal: u32) -> Address {
        Address::new(ip(ordinal), REDIS_PORT)
    }

    fn ip(ordinal: u32) -> String {
        format!("127.0.0.{}", 10 + ordinal)
    }

    fn inst(
        ordinal: u32,
        redis: Option<ReplicationInfo>,
        label: Option<RoleLabel>,
    ) -> ObservedInstance {
        ObservedInstance {
            name: format!("cache-{ordinal}"),
            ordinal,
            ip: Some(ip(ordinal)),
            deleting: false,
            pod_ready: true,
            role_label: label,
            redis,
        }
    }

    fn input(desired: u32, recorded: RecordedRoles, instances: Vec<ObservedInstance>) -> PlanInput {
        PlanInput {
            replication: "cache".into(),
            desired_instances: desired,
            recorded,
            instances,
        }
    }

    fn recorded(master: u32, epoch: i64) -> RecordedRoles {
        RecordedRoles {
            current_master: Some(format!("cache-{master}")),
            master_address: Some(addr(master).to_string()),
            epoch,
            target_master: None,
        }
    }

    #[test]
    fn empty_set_creates_every_pod_and_waits() {
        let p = plan(&input(3, RecordedRoles::default(), vec![]));
        assert_eq!(p.create, vec![0, 1, 2]);
        assert_eq!(p.master, MasterState::AwaitingBootstrap);
        assert_eq!(p.intent, None);
        assert_eq!(p.promote, None);
    }

    #[test]
    fn bootstrap_records_intent_then_promotes_lowest_ordinal_among_equals() {
        let p = plan(&input(
            3,
            RecordedRoles::default(),
            vec![
                inst(0, fenced(0), None),
                inst(1, fenced(0), None),
                inst(2, None, None),
            ],
        ));
        let intent = p.intent.expect("intent");
        assert_eq!(
            (intent.master.as_str(), intent.epoch, intent.promotes),
            ("cache-0", 1, true)
        );
        assert_eq!(p.promote.as_deref(), Some("cache-0"));
        assert_eq!(p.rewire, vec!["cache-1".to_string()]);
        assert!(
            p.relabel
                .contains(&("cache-0".into(), Some(RoleLabel::Master)))
        );
        assert!(
            p.relabel
                .contains(&("cache-1".into(), Some(RoleLabel::Replica)))
        );
        assert!(
            !p.relabel.iter().any(|(n, _)| n == "cache-2"),
            "unreachable pod is left alone"
        );
    }

    #[test]
    fn bootstrap_prefers_the_instance_with_most_data() {
        let p = plan(&input(
            2,
            RecordedRoles::default(),
            vec![inst(0, fenced(10), None), inst(1, fenced(500), None)],
        ));
        assert_eq!(p.promote.as_deref(), Some("cache-1"));
    }

    #[test]
    fn steady_state_does_nothing() {
        let p = plan(&input(
            3,
            recorded(0, 1),
            vec![
                inst(0, master(100), Some(RoleLabel::Master)),
                inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
                inst(2, replica_of(0, 90), Some(RoleLabel::Replica)),
            ],
        ));
        assert_eq!(p.create, Vec::<u32>::new());
        assert_eq!(p.intent, None);
        assert_eq!(p.promote, None);
        assert_eq!(p.rewire, Vec::<String>::new());
        assert_eq!(p.relabel, vec![]);
    }

    #[test]
    fn a_returning_fenced_replica_is_rewired_and_labelled() {
        let p = plan(&input(
            2,
            recorded(0, 1),
            vec![
                inst(0, master(100), Some(RoleLabel::Master)),
                inst(1, fenced(0), None),
            ],
        ));
        assert_eq!(p.rewire, vec!["cache-1".to_string()]);
        assert_eq!(
            p.relabel,
            vec![("cache-1".into(), Some(RoleLabel::Replica))]
        );
        assert_eq!(p.promote, None);
    }

    #[test]
    fn a_second_master_is_demoted_and_loses_the_label_first() {
        let p = plan(&input(
            2,
            recorded(0, 3),
            vec![
                inst(0, master(100), Some(RoleLabel::Master)),
                inst(1, master(40), Some(RoleLabel::Master)),
            ],
        ));
        assert_eq!(p.rewire, vec!["cache-1".to_string()]);
        assert_eq!(
            p.relabel,
            vec![("cache-1".into(), Some(RoleLabel::Replica))],
            "the stray master label is replaced"
        );
        assert_eq!(p.intent, None);
    }

    #[test]
    fn a_restarted_empty_master_is_not_promoted_over_a_replica_with_data() {
        let p = plan(&input(
            3,
            recorded(0, 1),
            vec![
                inst(0, fenced(0), Some(RoleLabel::Master)),
                inst(1, replica_of(0, 900), Some(RoleLabel::Replica)),
                inst(2, replica_of(0, 800), Some(RoleLabel::Replica)),
            ],
        ));
        let intent = p.intent.expect("intent");
        assert_eq!((intent.master.as_str(), intent.epoch), ("cache-1", 2));
        assert_eq!(p.promote.as_deref(), Some("cache-1"));
        assert_eq!(
            p.relabel,
            vec![
                ("cache-0".into(), Some(RoleLabel::Replica)),
                ("cache-1".into(), Some(RoleLabel::Master)),
            ],
            "the old master's label goes before the new master's is written"
        );
        assert!(p.rewire.contains(&"cache-0".to_string()));
        assert!(p.rewire.contains(&"cache-2".to_string()));
    }

    #[test]
    fn an_interrupted_promotion_resumes_without_a_new_epoch() {
        let mut rec = recorded(1, 2);
        rec.target_master = Some("cache-1".into());
        let p = plan(&input(
            2,
            rec,
            vec![
                inst(0, fenced(0), None),
                inst(1, replica_of(0, 900), Some(RoleLabel::Replica)),
            ],
        ));
        assert_eq!(p.intent, None);
        assert_eq!(p.promote.as_deref(), Some("cache-1"));
    }

    #[test]
    fn an_unreachable_master_is_reported_and_nothing_is_rewired() {
        let p = plan(&input(
            2,
            recorded(0, 1),
            vec![
                inst(0, None, Some(RoleLabel::Master)),
                inst(1, replica_of(0, 10), Some(RoleLabel::Replica)),
            ],
        ));
        assert_eq!(
            p.master,
            MasterState::Unavailable {
                name: "cache-0".into()
            }
        );
        assert_eq!(p.intent, None);
        assert_eq!(p.rewire, Vec::<String>::new());
        assert_eq!(
            p.relabel,
            vec![],
            "the recorded master keeps its label until a failover"
        );
    }

    #[test]
    fn a_moved_master_pod_gets_its_new_address_recorded() {
        let mut rec = recorded(0, 4);
        rec.master_address = Some("127.0.0.99:6379".into());
        let p = plan(&input(
            1,
            rec,
            vec![inst(0, master(5), Some(RoleLabel::Master))],
        ));
        let intent = p.intent.expect("intent");
        assert_eq!((intent.epoch, intent.promotes), (4, false));
        assert_eq!(intent.address, addr(0));
    }

    #[test]
    fn scale_down_removes_replicas_but_never_the_master() {
        let p = plan(&input(
            1,
            recorded(2, 1),
            vec![
                inst(0, replica_of(2, 5), Some(RoleLabel::Replica)),
                inst(1, replica_of(2, 5), Some(RoleLabel::Replica)),
                inst(2, master(5), Some(RoleLabel::Master)),
            ],
        ));
        assert_eq!(p.delete, vec!["cache-1".to_string()]);
        assert!(p.scale_down_blocked.expect("blocked").contains("cache-2"));
        assert!(p.rewire.is_empty());
    }

    #[test]
    fn pods_being_deleted_are_not_recreated_or_touched() {
        let mut going = inst(1, replica_of(0, 5), Some(RoleLabel::Replica));
        going.deleting = true;
        let p = plan(&input(
            2,
            recorded(0, 1),
            vec![inst(0, master(5), Some(RoleLabel::Master)), going],
        ));
        assert!(p.create.is_empty());
        assert!(p.rewire.is_empty());
        assert!(p.delete.is_empty());
    }

    #[test]
    fn leaving_instances_are_never_elected() {
        let p = plan(&input(
            1,
            RecordedRoles::default(),
            vec![inst(0, fenced(1), None), inst(1, fenced(99), None)],
        ));
        assert_eq!(p.delete, vec!["cache-1".to_string()]);
        assert_eq!(p.promote.as_deref(), Some("cache-0"));
    }
}
