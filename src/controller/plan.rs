//! The planner: a pure function from what was observed to what must be done.
//!
//! It decides which pods to create or remove, which instance is master (bootstrap, failover,
//! switchover), recording that intent before anything is touched, who must follow the master,
//! and which role labels pods carry. Nothing here talks to Kubernetes or Redis, so every decision
//! of the safety rules (DESIGN §4) is unit-tested.

use std::cmp::Reverse;
use std::time::Duration;

use crate::api::Topology;
use crate::redis::{Address, REDIS_PORT, ReplicationInfo, Role};
use crate::resources::RoleLabel;

mod recovery;
mod steps;

pub use steps::Step;

/// One existing instance pod, as observed this round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedInstance {
    pub name: String,
    pub ordinal: u32,
    pub ip: Option<String>,
    /// The pod has a deletion timestamp: it is going.
    pub deleting: bool,
    /// The pod's Ready condition.
    pub pod_ready: bool,
    pub role_label: Option<RoleLabel>,
    /// `INFO replication`, or `None` when the instance could not be reached.
    pub redis: Option<ReplicationInfo>,
    /// Replica priority (annotation); lower is preferred, 0 never promoted (as Sentinel's).
    pub priority: u32,
    /// The pod was built from an older spec (image, resources, ...): only a new pod applies it.
    pub spec_outdated: bool,
    /// The instance runs an older `config` that could not be applied live.
    pub config_outdated: bool,
    /// Why the pod cannot run, when Kubernetes says it cannot (for status and Events).
    pub problem: Option<PodProblem>,
}

/// A pod that will not run until something changes: unschedulable, its image or configuration
/// unusable, or crash-looping.
#[derive(Clone, Debug, PartialEq)]
pub struct PodProblem {
    /// Kubernetes' reason (`Unschedulable`, `ImagePullBackOff`, `CrashLoopBackOff`, ...).
    pub reason: String,
    pub message: String,
}

impl ObservedInstance {
    /// The rolling update must replace this instance.
    pub fn outdated(&self) -> bool {
        self.spec_outdated || self.config_outdated
    }

    pub fn address(&self) -> Option<Address> {
        self.ip
            .as_ref()
            .map(|ip| Address::new(ip.clone(), REDIS_PORT))
    }
}

/// What the status says about roles, as the planner needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordedRoles {
    pub current_master: Option<String>,
    pub master_address: Option<String>,
    pub epoch: i64,
    pub target_master: Option<String>,
    /// The master to hand the role back to once it is refilled (failover disabled).
    pub hand_back_to: Option<String>,
}

impl From<&crate::api::RedisReplicationStatus> for RecordedRoles {
    fn from(status: &crate::api::RedisReplicationStatus) -> Self {
        Self {
            current_master: status.current_master.clone(),
            master_address: status.master_address.clone(),
            epoch: status.epoch,
            target_master: status.target_master.clone(),
            hand_back_to: status.hand_back_to.clone(),
        }
    }
}

/// The failover settings and the timing facts the operator measured.
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverPolicy {
    pub enabled: bool,
    pub down_after: Duration,
    /// How long the operator has been unable to reach the recorded master (or has not seen its
    /// pod); `None` when it answered the last probe.
    pub master_unreachable_for: Option<Duration>,
    /// Set while a previous failover is too recent for another one (rate limit).
    pub cooldown_remaining: Option<Duration>,
    /// The first master is chosen once every desired instance answers, or after this grace
    /// (some instance may never come up): so the choice compares all the data there is.
    pub bootstrap_grace_over: bool,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            down_after: Duration::from_secs(5),
            master_unreachable_for: None,
            cooldown_remaining: None,
            bootstrap_grace_over: false,
        }
    }
}

/// Everything the planner looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInput {
    pub desired_instances: u32,
    pub recorded: RecordedRoles,
    pub instances: Vec<ObservedInstance>,
    pub policy: FailoverPolicy,
    pub topology: Topology,
    /// The instance the user asked to make master (annotation `redis.vigil.dev/switchover-to`).
    pub switchover_to: Option<String>,
    /// The instance the user forces to be master, discarding what others hold beyond it
    /// (annotation `redis.vigil.dev/force-master`).
    pub force_master: Option<String>,
}

/// The master decision that must be written to status before any instance is touched.
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    pub master: String,
    pub address: Address,
    pub epoch: i64,
    /// A promotion follows; `false` when only the master's address changed.
    pub promotes: bool,
    /// Recorded with the master: who takes the role back once refilled (see `Change::Refill`).
    pub hand_back_to: Option<String>,
}

/// Why the master changes in this plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The first master of the set.
    Bootstrap,
    /// The recorded master failed; `from` is replaced.
    Failover { from: String, reason: String },
    /// Planned: the master hands over without losing writes (its pod is being deleted, a
    /// scale-down or rolling update removes it, or the user asked).
    Switchover { from: String, reason: String },
    /// Failover is disabled and the recorded master restarted with at least the data of every
    /// replica: it is master again.
    Restore,
    /// Failover is disabled and the recorded master `master` restarted with `missing_bytes` less
    /// than a replica: that replica serves as master while `master` is refilled from it, then
    /// hands the role back (rule 2: less data never overwrites more).
    Refill { master: String, missing_bytes: i64 },
    /// The user forced this master (`redis.vigil.dev/force-master`): the others resync from it
    /// and discard up to `discarded_bytes` they held beyond it.
    Forced { discarded_bytes: i64 },
    /// An interrupted promotion (intent recorded, promotion not verified) is finished.
    Resume,
    /// An interrupted change is undone: `master` still acts as master and the target it named
    /// cannot take over without losing its writes, so `master` stays.
    RolledBack { target: String },
}

/// The recorded master's health, as rule 3 judges it.
#[derive(Clone, Debug, PartialEq)]
pub enum MasterDown {
    /// Unreachable for less than `downAfter`.
    Suspected,
    /// Unreachable for `downAfter`, but nothing corroborates it (only the operator is cut off).
    Subjective,
    /// Unreachable for `downAfter` and corroborated.
    Objective { evidence: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum MasterState {
    /// The master is known and acting.
    Acting { name: String, address: Address },
    /// No instance is reachable yet to become the first master.
    AwaitingBootstrap,
    /// The recorded master is not acting and no change is made this round.
    Unavailable {
        name: String,
        down: MasterDown,
        why_no_failover: Option<String>,
    },
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
    /// The recorded master's health when it is not acting (for events and status).
    pub master_down: Option<MasterDown>,
    pub change: Option<Change>,
    /// Written to status (optimistically) before any step below.
    pub intent: Option<Intent>,
    /// Pods whose role label must go before anything else (rule 1).
    pub unlabel: Vec<String>,
    /// `FAILOVER TO <promote>` on this instance instead of `REPLICAOF NO ONE` on the target.
    pub switchover_from: Option<String>,
    /// Becomes master: promoted and verified.
    pub promote: Option<String>,
    /// Labelled master once the promotion is verified.
    pub label_master: Option<String>,
    /// Must `REPLICAOF` their upstream (a demoted master also loses its clients).
    pub rewire: Vec<Rewire>,
    /// Labelled replica, after they follow the master (rule 6).
    pub label_replicas: Vec<String>,
    /// What becomes of the user's switchover request.
    pub request: Option<RequestOutcome>,
    /// What becomes of the user's force-master request.
    pub force_request: Option<RequestOutcome>,
    /// Deleted for the rolling update (recreated from the current spec by a later round).
    pub roll: Option<String>,
}

/// A replica to point at its upstream: the master, or its predecessor in a chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Rewire {
    pub name: String,
    pub upstream: Address,
}

/// What becomes of a switchover the user asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum RequestOutcome {
    /// Carried out this round, or already true: the request is done.
    Done,
    /// It can never be carried out as asked: dropped, with this reason.
    Rejected(String),
    /// It waits (for the target to be synced, ...): why.
    Waiting(String),
}

impl Plan {
    /// Whether carrying the plan out changes anything (pods, labels, roles, status intent):
    /// its effects are then observed before the next decision.
    pub fn acts(&self) -> bool {
        self.intent.is_some()
            || self.promote.is_some()
            || self.roll.is_some()
            || !self.create.is_empty()
            || !self.delete.is_empty()
            || !self.unlabel.is_empty()
            || !self.rewire.is_empty()
            || self.label_master.is_some()
            || !self.label_replicas.is_empty()
    }
}

pub fn plan(input: &PlanInput) -> Plan {
    let (create, delete, scale_down_blocked) = plan_membership(input);
    let decision = decide(input, &delete);
    let mut plan = Plan {
        create,
        delete,
        scale_down_blocked,
        master: decision.master.unwrap_or(MasterState::AwaitingBootstrap),
        master_down: decision.down,
        change: decision.change,
        intent: decision.intent,
        unlabel: Vec::new(),
        switchover_from: decision.switchover_from,
        promote: decision.promote,
        label_master: None,
        rewire: Vec::new(),
        label_replicas: Vec::new(),
        request: decision.request,
        force_request: decision.force_request,
        roll: None,
    };
    if let Some(intent) = &mut plan.intent {
        intent.hand_back_to = recovery::hand_back_after(input, &plan.change, intent);
    }
    plan_roles(input, &mut plan);
    plan.roll = plan_roll(input, &plan);
    plan
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
                "scaling down to {} instances removes the master {}: it hands over to a synced \
                 replica first",
                input.desired_instances, inst.name
            ));
        } else {
            delete.push(inst.name.clone());
        }
    }
    (create, delete, blocked)
}

#[derive(Default)]
struct Decision {
    master: Option<MasterState>,
    down: Option<MasterDown>,
    change: Option<Change>,
    intent: Option<Intent>,
    switchover_from: Option<String>,
    promote: Option<String>,
    request: Option<RequestOutcome>,
    force_request: Option<RequestOutcome>,
}

impl Decision {
    fn acting(inst: &ObservedInstance) -> Self {
        match inst.address() {
            Some(address) => Self {
                master: Some(MasterState::Acting {
                    name: inst.name.clone(),
                    address,
                }),
                ..Self::default()
            },
            None => Self::unavailable(&inst.name, MasterDown::Suspected, None),
        }
    }

    fn unavailable(name: &str, down: MasterDown, why: Option<String>) -> Self {
        Self {
            master: Some(MasterState::Unavailable {
                name: name.to_string(),
                down: down.clone(),
                why_no_failover: why,
            }),
            down: Some(down),
            ..Self::default()
        }
    }

    /// `to` becomes master at the next epoch.
    fn promote(to: &ObservedInstance, epoch: i64, change: Change) -> Self {
        let Some(address) = to.address() else {
            return Self::unavailable(&to.name, MasterDown::Suspected, None);
        };
        Self {
            master: Some(MasterState::Acting {
                name: to.name.clone(),
                address: address.clone(),
            }),
            intent: Some(Intent {
                master: to.name.clone(),
                address,
                epoch: epoch + 1,
                promotes: true,
                hand_back_to: None,
            }),
            change: Some(change),
            promote: Some(to.name.clone()),
            ..Self::default()
        }
    }
}

fn decide(input: &PlanInput, leaving: &[String]) -> Decision {
    let force_request = match recovery::forced(input, leaving) {
        Some(Ok(forced)) => return forced,
        Some(Err(outcome)) => Some(outcome),
        None => None,
    };
    let mut d = decide_unforced(input, leaving);
    d.force_request = force_request;
    d
}

fn decide_unforced(input: &PlanInput, leaving: &[String]) -> Decision {
    let recorded = &input.recorded;
    let Some(name) = recorded.current_master.as_deref() else {
        let all_answer = (0..input.desired_instances).all(|o| {
            input
                .instances
                .iter()
                .any(|i| i.ordinal == o && !i.deleting && i.redis.is_some())
        });
        if !all_answer && !input.policy.bootstrap_grace_over {
            return Decision::default();
        }
        return match best_candidate(input, leaving, None, |_| true) {
            Some(first) => Decision::promote(first, recorded.epoch, Change::Bootstrap),
            None => Decision::default(),
        };
    };
    let inst = input.instances.iter().find(|i| i.name == name);
    match inst.and_then(|i| i.redis.as_ref().map(|r| (i, r))) {
        Some((inst, info)) if info.is_master() => acting_master(input, inst, leaving),
        // Intent was recorded but the promotion did not finish.
        Some((inst, _)) if recorded.target_master.as_deref() == Some(name) => {
            recovery::resume(input, inst)
        }
        // Reachable but not master: it restarted (and booted fenced) or was demoted.
        Some((inst, _)) => recovery::restarted_master(input, inst, leaving),
        None => unreachable_master(input, name, inst, leaving),
    }
}

/// The master answers as master. It hands over first (rule 7) when its pod is being deleted, a
/// scale-down removes it, the user asked, or only it is left for the rolling update.
fn acting_master(input: &PlanInput, inst: &ObservedInstance, leaving: &[String]) -> Decision {
    let recorded = &input.recorded;
    let forced = if inst.deleting && input.policy.enabled {
        Some(format!("pod {} is being deleted", inst.name))
    } else if inst.ordinal >= input.desired_instances {
        Some(format!(
            "scaling down to {} instances removes {}",
            input.desired_instances, inst.name
        ))
    } else {
        None
    };
    let mut request = None;
    let handover = match forced {
        Some(reason) => switchover_candidate(input, leaving, inst).map(|t| (t, reason)),
        None => match input.switchover_to.as_deref() {
            Some(wanted) => match judge_request(input, inst, leaving, wanted) {
                Ok(target) => {
                    request = Some(RequestOutcome::Done);
                    Some((target, format!("the user asked for {wanted}")))
                }
                Err(outcome) => {
                    request = Some(outcome);
                    None
                }
            },
            None => recovery::hand_back(input, inst, leaving)
                .or_else(|| rolling_handover(input, inst, leaving)),
        },
    };
    if let Some((target, reason)) = handover {
        let mut d = Decision::promote(
            target,
            recorded.epoch,
            Change::Switchover {
                from: inst.name.clone(),
                reason,
            },
        );
        d.switchover_from = Some(inst.name.clone());
        d.request = request;
        return d;
    }
    let mut d = Decision::acting(inst);
    d.request = request;
    // The master pod may have come back with a new IP: record where it is now.
    if let Some(MasterState::Acting { address, .. }) = &d.master
        && recorded.master_address.as_deref() != Some(&address.to_string())
    {
        d.intent = Some(Intent {
            master: inst.name.clone(),
            address: address.clone(),
            epoch: recorded.epoch,
            promotes: false,
            hand_back_to: None,
        });
    }
    d
}

/// `FAILOVER TO` needs a replica linked to the master itself: the best synced one, preferring
/// instances already on the current spec.
fn switchover_candidate<'a>(
    input: &'a PlanInput,
    leaving: &[String],
    master: &ObservedInstance,
) -> Option<&'a ObservedInstance> {
    let master_address = master.address()?;
    let eligible = |i: &ObservedInstance| {
        i.redis
            .as_ref()
            .is_some_and(|r| r.is_synced_replica() && r.following() == Some(&master_address))
    };
    best_candidate(input, leaving, Some(&master.name), |i| {
        eligible(i) && !i.outdated()
    })
    .or_else(|| best_candidate(input, leaving, Some(&master.name), eligible))
}

/// Whether the user's switchover to `wanted` can happen now: the target, or what becomes of
/// the request.
fn judge_request<'a>(
    input: &'a PlanInput,
    master: &ObservedInstance,
    leaving: &[String],
    wanted: &str,
) -> Result<&'a ObservedInstance, RequestOutcome> {
    if wanted == master.name {
        return Err(RequestOutcome::Done);
    }
    let Some(target) = input.instances.iter().find(|i| i.name == wanted) else {
        return Err(RequestOutcome::Rejected(format!(
            "{wanted} is not an instance of this replication"
        )));
    };
    if leaving.contains(&target.name) || target.ordinal >= input.desired_instances {
        return Err(RequestOutcome::Rejected(format!(
            "{wanted} is removed by the scale-down"
        )));
    }
    if target.priority == 0 {
        return Err(RequestOutcome::Rejected(format!(
            "{wanted} has replica-priority 0 and is never promoted"
        )));
    }
    let linked = master.address().is_some_and(|m| {
        target
            .redis
            .as_ref()
            .is_some_and(|r| r.is_synced_replica() && r.following() == Some(&m))
    });
    if target.deleting || !linked {
        return Err(RequestOutcome::Waiting(format!(
            "waiting for {wanted} to be a synced replica of the master {}",
            master.name
        )));
    }
    Ok(target)
}

/// Rolling update (rule 8): the master goes last, once every other instance runs the current
/// spec and the set is settled; it hands over to a synced replica first.
fn rolling_handover<'a>(
    input: &'a PlanInput,
    master: &ObservedInstance,
    leaving: &[String],
) -> Option<(&'a ObservedInstance, String)> {
    let others_current = input
        .instances
        .iter()
        .all(|i| i.name == master.name || !i.outdated());
    if !master.outdated() || !others_current || !settled(input, master) {
        return None;
    }
    let target = switchover_candidate(input, leaving, master)?;
    Some((
        target,
        format!("rolling update: {} runs an older spec", master.name),
    ))
}

/// Every desired instance exists, is ready, is not going, and follows its upstream in sync:
/// the only state in which the rolling update takes an instance away.
fn settled(input: &PlanInput, master: &ObservedInstance) -> bool {
    let Some(master_address) = master.address() else {
        return false;
    };
    let complete = input.instances.len() == input.desired_instances as usize
        && input
            .instances
            .iter()
            .all(|i| i.ordinal < input.desired_instances && !i.deleting && i.pod_ready);
    let upstreams = upstreams(input, &master.name, &master_address, |_| true);
    complete
        && upstreams.len() + 1 == input.instances.len()
        && upstreams.iter().all(|(inst, upstream)| {
            inst.redis
                .as_ref()
                .is_some_and(|r| r.is_synced_replica() && r.following() == Some(upstream))
        })
}

/// Rule 3: unreachable for `downAfter`, and corroborated by Kubernetes or by the replicas.
fn unreachable_master(
    input: &PlanInput,
    name: &str,
    inst: Option<&ObservedInstance>,
    leaving: &[String],
) -> Decision {
    let policy = &input.policy;
    let unreachable_for = policy.master_unreachable_for.unwrap_or_default();
    if unreachable_for < policy.down_after {
        return Decision::unavailable(name, MasterDown::Suspected, None);
    }
    let Some(evidence) = corroboration(input, inst) else {
        return Decision::unavailable(
            name,
            MasterDown::Subjective,
            Some("only the operator cannot reach the master: its pod is ready and the replicas are linked".into()),
        );
    };
    let down = MasterDown::Objective { evidence };
    if !policy.enabled {
        return Decision::unavailable(name, down, Some("failover is disabled".into()));
    }
    if let Some(wait) = policy.cooldown_remaining {
        return Decision::unavailable(name, down, Some(cooldown_message(wait)));
    }
    match best_candidate(input, leaving, Some(name), |_| true) {
        Some(target) => {
            let mut d = Decision::promote(
                target,
                input.recorded.epoch,
                Change::Failover {
                    from: name.to_string(),
                    reason: match &down {
                        MasterDown::Objective { evidence } => evidence.clone(),
                        _ => "master down".into(),
                    },
                },
            );
            d.down = Some(down);
            d
        }
        None => Decision::unavailable(
            name,
            down,
            Some("no reachable replica can be promoted".into()),
        ),
    }
}

fn cooldown_message(wait: Duration) -> String {
    format!(
        "a failover happened recently; the next is allowed in {}s",
        wait.as_secs().max(1)
    )
}

/// Evidence beyond the operator's own probes that the master is down.
fn corroboration(input: &PlanInput, master: Option<&ObservedInstance>) -> Option<String> {
    let Some(master) = master else {
        return Some("its pod is gone".into());
    };
    if master.deleting {
        return Some(format!("pod {} is being deleted", master.name));
    }
    if !master.pod_ready {
        return Some(format!("pod {} is not ready", master.name));
    }
    let down_after_secs = input.policy.down_after.as_secs_f64();
    let followers: Vec<&ReplicationInfo> = input
        .instances
        .iter()
        .filter(|i| i.name != master.name && !i.deleting)
        .filter_map(|i| i.redis.as_ref())
        .filter(|r| master.address().is_some_and(|a| r.following() == Some(&a)))
        .collect();
    let lost = followers
        .iter()
        .filter(|r| {
            matches!(r.role, Role::Replica { link_down_seconds: Some(s), .. } if s as f64 >= down_after_secs)
        })
        .count();
    (!followers.is_empty() && lost * 2 > followers.len()).then(|| {
        format!(
            "{lost} of {} replicas lost their link to it",
            followers.len()
        )
    })
}

fn offset(inst: &ObservedInstance) -> i64 {
    inst.redis.as_ref().map_or(-1, |r| r.offset)
}

/// Rule 4: the reachable replica with the greatest replication offset, then the preferred
/// priority, then the lowest ordinal, among those `also` accepts. Never one in a full sync,
/// leaving the set, being deleted, or with priority 0 (unless nothing else exists at bootstrap).
fn best_candidate<'a>(
    input: &'a PlanInput,
    leaving: &[String],
    excluded: Option<&str>,
    also: impl Fn(&ObservedInstance) -> bool,
) -> Option<&'a ObservedInstance> {
    input
        .instances
        .iter()
        .filter(|i| Some(i.name.as_str()) != excluded && !i.deleting && !leaving.contains(&i.name))
        .filter(|i| i.ordinal < input.desired_instances && also(i))
        .filter(|i| i.ip.is_some() && (i.priority > 0 || excluded.is_none()))
        .filter_map(|i| i.redis.as_ref().map(|r| (i, r)))
        .filter(|(_, r)| {
            !matches!(
                r.role,
                Role::Replica {
                    sync_in_progress: true,
                    ..
                }
            )
        })
        .min_by_key(|(i, r)| (Reverse(r.offset), i.priority, i.ordinal))
        .map(|(i, _)| i)
}

/// Who follows whom and which labels pods carry. Removals come first (rule 1); replica labels
/// only once an instance follows its upstream (rule 6).
fn plan_roles(input: &PlanInput, plan: &mut Plan) {
    let master = match &plan.master {
        MasterState::Acting { name, address } => Some((name.clone(), address.clone())),
        _ => None,
    };
    let recorded = input.recorded.current_master.as_deref();
    // A switching-over master is made a replica by `FAILOVER` itself; one beyond `instances`
    // leaves next round.
    let stays = |i: &ObservedInstance| {
        !i.deleting
            && !plan.delete.contains(&i.name)
            && i.ordinal < input.desired_instances
            && plan.switchover_from.as_deref() != Some(i.name.as_str())
    };
    let upstreams = master
        .as_ref()
        .map(|(name, address)| upstreams(input, name, address, stays))
        .unwrap_or_default();
    for inst in &input.instances {
        let is_master = master.as_ref().is_some_and(|(m, _)| *m == inst.name);
        if is_master {
            if inst.role_label != Some(RoleLabel::Master) {
                plan.label_master = Some(inst.name.clone());
            }
            continue;
        }
        let labelled_master = inst.role_label == Some(RoleLabel::Master);
        if master.is_none() {
            // No acting master: only the recorded master may keep the master label.
            if labelled_master && Some(inst.name.as_str()) != recorded {
                plan.unlabel.push(inst.name.clone());
            }
            continue;
        }
        let upstream = upstreams.iter().find(|(i, _)| i.name == inst.name);
        match (inst.redis.as_ref(), upstream) {
            (Some(info), Some((_, upstream))) => {
                if labelled_master {
                    plan.unlabel.push(inst.name.clone());
                }
                if info.following() != Some(upstream) {
                    plan.rewire.push(Rewire {
                        name: inst.name.clone(),
                        upstream: upstream.clone(),
                    });
                }
                if inst.role_label != Some(RoleLabel::Replica) {
                    plan.label_replicas.push(inst.name.clone());
                }
            }
            _ if labelled_master => plan.unlabel.push(inst.name.clone()),
            _ => {}
        }
    }
}

/// The upstream of every reachable non-master instance that `stays`: the master (star), or the
/// previous such instance in ordinal order (chain). A link that is not a synced replica is
/// skipped, so one broken or syncing instance never cuts the rest of the chain
/// off the data. The target of a requested switchover follows the master whatever the topology,
/// as `FAILOVER TO` needs.
fn upstreams<'a>(
    input: &'a PlanInput,
    master: &str,
    master_address: &Address,
    stays: impl Fn(&ObservedInstance) -> bool,
) -> Vec<(&'a ObservedInstance, Address)> {
    let mut members: Vec<&ObservedInstance> = input
        .instances
        .iter()
        .filter(|i| i.name != master && i.redis.is_some() && stays(i))
        .collect();
    members.sort_by_key(|i| i.ordinal);
    let mut link = master_address.clone();
    let mut out = Vec::with_capacity(members.len());
    for inst in members {
        let direct = input.topology == Topology::Star
            || input.switchover_to.as_deref() == Some(inst.name.as_str());
        let upstream = if direct {
            master_address.clone()
        } else {
            link.clone()
        };
        // A synced replica serves its own replicas even while it is being moved: they follow
        // along with a partial resync.
        let in_sync = inst
            .redis
            .as_ref()
            .is_some_and(ReplicationInfo::is_synced_replica);
        if let (true, Some(address)) = (in_sync, inst.address()) {
            link = address;
        }
        out.push((inst, upstream));
    }
    out
}

/// Rolling update (rule 8): one outdated replica at a time, the highest ordinal first, only
/// when nothing else is happening and every instance is ready and in sync. The master goes last
/// through a switchover (`rolling_handover`); a lone instance is simply replaced.
fn plan_roll(input: &PlanInput, plan: &Plan) -> Option<String> {
    let MasterState::Acting { name: master, .. } = &plan.master else {
        return None;
    };
    let quiet = plan.intent.is_none()
        && plan.change.is_none()
        && plan.create.is_empty()
        && plan.delete.is_empty()
        && plan.unlabel.is_empty()
        && plan.rewire.is_empty()
        && plan.label_master.is_none()
        && plan.label_replicas.is_empty();
    let master_inst = input.instances.iter().find(|i| &i.name == master)?;
    if !quiet || !settled(input, master_inst) {
        return None;
    }
    let replica = input
        .instances
        .iter()
        .filter(|i| &i.name != master && i.outdated())
        .max_by_key(|i| i.ordinal);
    match replica {
        Some(r) => Some(r.name.clone()),
        None if input.instances.len() == 1 && master_inst.outdated() => Some(master.clone()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::{FENCE_HOST, FENCE_PORT};

    fn info(role: Role, offset: i64) -> ReplicationInfo {
        ReplicationInfo::fixture(role, offset)
    }

    fn replica_role(master: Address, link_down_seconds: Option<u64>) -> Role {
        Role::Replica {
            master,
            link_up: link_down_seconds.is_none(),
            sync_in_progress: false,
            link_down_seconds,
        }
    }

    fn fenced(offset: i64) -> Option<ReplicationInfo> {
        Some(info(
            replica_role(Address::new(FENCE_HOST, FENCE_PORT), Some(0)),
            offset,
        ))
    }

    fn master(offset: i64) -> Option<ReplicationInfo> {
        Some(info(Role::Master, offset))
    }

    fn replica_of(ordinal: u32, offset: i64) -> Option<ReplicationInfo> {
        Some(info(replica_role(addr(ordinal), None), offset))
    }

    fn lost_link_to(ordinal: u32, offset: i64, seconds: u64) -> Option<ReplicationInfo> {
        Some(info(replica_role(addr(ordinal), Some(seconds)), offset))
    }

    fn addr(ordinal: u32) -> Address {
        Address::new(ip(ordinal), REDIS_PORT)
    }

    fn ip(ordinal: u32) -> String {
        format!("10.244.0.{}", 10 + ordinal)
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
            priority: 100,
            spec_outdated: false,
            config_outdated: false,
            problem: None,
        }
    }

    fn input(desired: u32, recorded: RecordedRoles, instances: Vec<ObservedInstance>) -> PlanInput {
        PlanInput {
            desired_instances: desired,
            recorded,
            instances,
            policy: FailoverPolicy::default(),
            topology: Topology::Star,
            switchover_to: None,
            force_master: None,
        }
    }

    fn recorded(master: u32, epoch: i64) -> RecordedRoles {
        RecordedRoles {
            current_master: Some(format!("cache-{master}")),
            master_address: Some(addr(master).to_string()),
            epoch,
            target_master: None,
            hand_back_to: None,
        }
    }

    fn rewired(rewire: &[Rewire]) -> Vec<String> {
        rewire.iter().map(|r| r.name.clone()).collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A master down for `down_for` with these instances (cache-0 is the recorded master).
    fn down_master(down_for: Duration, instances: Vec<ObservedInstance>) -> PlanInput {
        let mut i = input(3, recorded(0, 4), instances);
        i.policy.master_unreachable_for = Some(down_for);
        i
    }

    const LONG: Duration = Duration::from_secs(6);

    #[test]
    fn empty_set_creates_every_pod_and_waits() {
        let p = plan(&input(3, RecordedRoles::default(), vec![]));
        assert_eq!(p.create, vec![0, 1, 2]);
        assert_eq!(p.master, MasterState::AwaitingBootstrap);
        assert_eq!((p.intent, p.promote), (None, None));
    }

    #[test]
    fn bootstrap_records_intent_then_promotes_lowest_ordinal_among_equals() {
        let mut i = input(
            3,
            RecordedRoles::default(),
            vec![
                inst(0, fenced(0), None),
                inst(1, fenced(0), None),
                inst(2, None, None),
            ],
        );
        i.policy.bootstrap_grace_over = true;
        let p = plan(&i);
        let intent = p.intent.expect("intent");
        assert_eq!(
            (intent.master.as_str(), intent.epoch, intent.promotes),
            ("cache-0", 1, true)
        );
        assert_eq!(p.change, Some(Change::Bootstrap));
        assert_eq!(p.promote.as_deref(), Some("cache-0"));
        assert_eq!(p.label_master.as_deref(), Some("cache-0"));
        assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
        assert_eq!(
            p.label_replicas,
            names(&["cache-1"]),
            "the unreachable pod is left alone"
        );
    }

    #[test]
    fn bootstrap_waits_for_every_instance_until_the_grace_is_over() {
        let early = input(
            3,
            RecordedRoles::default(),
            vec![inst(1, fenced(0), None), inst(2, fenced(0), None)],
        );
        let p = plan(&early);
        assert_eq!(
            (p.master, p.promote),
            (MasterState::AwaitingBootstrap, None)
        );
        let mut late = early;
        late.policy.bootstrap_grace_over = true;
        assert_eq!(plan(&late).promote.as_deref(), Some("cache-1"));
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
        assert!(p.create.is_empty() && p.rewire.is_empty() && p.unlabel.is_empty());
        assert_eq!(
            (p.intent, p.promote, p.change, p.label_master),
            (None, None, None, None)
        );
        assert!(p.label_replicas.is_empty());
    }

    #[test]
    fn a_returning_fenced_replica_is_rewired_then_labelled() {
        let p = plan(&input(
            2,
            recorded(0, 1),
            vec![
                inst(0, master(100), Some(RoleLabel::Master)),
                inst(1, fenced(0), None),
            ],
        ));
        assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
        assert_eq!(p.label_replicas, names(&["cache-1"]));
        assert_eq!(p.promote, None);
    }

    #[test]
    fn a_returning_old_master_loses_its_label_first_and_is_labelled_only_after_rewiring() {
        let p = plan(&input(
            2,
            recorded(0, 3),
            vec![
                inst(0, master(100), Some(RoleLabel::Master)),
                inst(1, master(40), Some(RoleLabel::Master)),
            ],
        ));
        assert_eq!(p.unlabel, names(&["cache-1"]));
        assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
        assert_eq!(p.label_replicas, names(&["cache-1"]));
        assert_eq!(p.intent, None);
    }

    #[test]
    fn a_restarted_empty_master_is_replaced_by_the_replica_with_most_data() {
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
        assert!(matches!(p.change, Some(Change::Failover { ref from, .. }) if from == "cache-0"));
        assert_eq!(
            p.unlabel,
            names(&["cache-0"]),
            "the old master's label goes first"
        );
        assert_eq!(p.label_master.as_deref(), Some("cache-1"));
        assert_eq!(rewired(&p.rewire), names(&["cache-0", "cache-2"]));
    }

    #[test]
    fn a_single_restarted_master_is_master_again() {
        let p = plan(&input(
            1,
            recorded(0, 1),
            vec![inst(0, fenced(0), Some(RoleLabel::Master))],
        ));
        assert_eq!(p.promote.as_deref(), Some("cache-0"));
        assert_eq!(p.intent.expect("intent").epoch, 2);
    }

    /// Rule 2 for every (master data less / equal / more) x (failover on / off): the promoted
    /// instance holds at least the data of every other, so nobody's data is overwritten.
    #[test]
    fn a_restarted_master_never_overwrites_more_data() {
        for enabled in [true, false] {
            for (own, expected_on, expected_off) in [
                (500, "cache-1", "cache-1"),
                (900, "cache-1", "cache-0"),
                (1200, "cache-0", "cache-0"),
            ] {
                let mut i = input(
                    3,
                    recorded(0, 1),
                    vec![
                        inst(0, fenced(own), Some(RoleLabel::Master)),
                        inst(1, lost_link_to(0, 900, 1), Some(RoleLabel::Replica)),
                        inst(2, lost_link_to(0, 700, 1), Some(RoleLabel::Replica)),
                    ],
                );
                i.policy.enabled = enabled;
                let p = plan(&i);
                let case = format!("failover {enabled}, master offset {own}");
                let promoted = p.promote.clone().expect(&case);
                let expected = if enabled { expected_on } else { expected_off };
                assert_eq!(promoted, expected, "{case}");
                let most = i.instances.iter().map(offset).max().unwrap_or(0);
                let chosen = i.instances.iter().find(|x| x.name == promoted);
                assert_eq!(chosen.map(offset), Some(most), "{case}");
                let change = p.change.clone().expect(&case);
                match (enabled, own < 900) {
                    (true, _) => assert!(matches!(change, Change::Failover { .. }), "{case}"),
                    (false, true) => assert_eq!(
                        change,
                        Change::Refill {
                            master: "cache-0".into(),
                            missing_bytes: 400
                        },
                        "{case}"
                    ),
                    (false, false) => assert_eq!(change, Change::Restore, "{case}"),
                }
            }
        }
    }

    #[test]
    fn a_refilled_master_is_fed_by_the_richest_replica_then_takes_the_role_back() {
        let mut i = input(
            3,
            recorded(0, 1),
            vec![
                inst(0, fenced(0), Some(RoleLabel::Master)),
                inst(1, lost_link_to(0, 900, 1), Some(RoleLabel::Replica)),
                inst(2, lost_link_to(0, 900, 1), Some(RoleLabel::Replica)),
            ],
        );
        i.policy.enabled = false;
        let p = plan(&i);
        let intent = p.intent.clone().expect("intent");
        assert_eq!(
            (intent.master.as_str(), intent.epoch, intent.hand_back_to),
            ("cache-1", 2, Some("cache-0".to_string()))
        );
        assert_eq!(
            p.unlabel,
            names(&["cache-0"]),
            "the empty master serves nobody"
        );
        assert_eq!(rewired(&p.rewire), names(&["cache-0", "cache-2"]));

        // Still syncing: the stand-in stays master and the hand-back stays recorded.
        let mut rec = recorded(1, 2);
        rec.hand_back_to = Some("cache-0".into());
        let syncing = Role::Replica {
            master: addr(1),
            link_up: false,
            sync_in_progress: true,
            link_down_seconds: None,
        };
        let mut later = input(
            3,
            rec,
            vec![
                inst(0, Some(info(syncing, 0)), None),
                inst(1, master(900), Some(RoleLabel::Master)),
                inst(2, replica_of(1, 900), Some(RoleLabel::Replica)),
            ],
        );
        later.policy.enabled = false;
        let p = plan(&later);
        assert_eq!((p.promote, p.intent), (None, None));

        // The stand-in crashes and returns with less than the refilled master: the role goes
        // straight home, and nothing is left to hand back.
        let mut crashed = later.clone();
        crashed.instances[0] = inst(0, replica_of(1, 900), Some(RoleLabel::Replica));
        crashed.instances[1] = inst(1, fenced(100), Some(RoleLabel::Master));
        let p = plan(&crashed);
        assert_eq!(p.promote.as_deref(), Some("cache-0"));
        assert_eq!(p.intent.and_then(|x| x.hand_back_to), None);

        // In sync: it takes the role back with FAILOVER TO, and the hand-back is done.
        later.instances[0] = inst(0, replica_of(1, 900), Some(RoleLabel::Replica));
        let p = plan(&later);
        assert_eq!(p.switchover_from.as_deref(), Some("cache-1"));
        assert_eq!(p.promote.as_deref(), Some("cache-0"));
        let intent = p.intent.expect("intent");
        assert_eq!((intent.epoch, intent.hand_back_to), (3, None));
        assert!(matches!(p.change, Some(Change::Switchover { .. })));
    }

    #[test]
    fn a_restarted_master_waits_when_only_an_unpromotable_replica_has_more() {
        for enabled in [true, false] {
            let mut richer = inst(1, lost_link_to(0, 900, 1), Some(RoleLabel::Replica));
            richer.priority = 0;
            let mut i = input(
                2,
                recorded(0, 1),
                vec![inst(0, fenced(100), Some(RoleLabel::Master)), richer],
            );
            i.policy.enabled = enabled;
            let p = plan(&i);
            assert_eq!(p.promote, None, "failover {enabled}");
            let MasterState::Unavailable {
                why_no_failover: Some(why),
                ..
            } = p.master
            else {
                panic!("failover {enabled}: {:?}", p.master);
            };
            assert!(
                why.contains("redis.vigil.dev/force-master=cache-0"),
                "{why}"
            );
        }
    }

    #[test]
    fn only_the_force_master_request_discards_data() {
        let mut i = input(
            2,
            recorded(0, 1),
            vec![
                inst(0, fenced(0), Some(RoleLabel::Master)),
                inst(1, lost_link_to(0, 900, 1), Some(RoleLabel::Replica)),
            ],
        );
        i.policy.enabled = false;
        i.force_master = Some("cache-0".into());
        let p = plan(&i);
        assert_eq!(p.promote.as_deref(), Some("cache-0"));
        assert_eq!(
            p.change,
            Some(Change::Forced {
                discarded_bytes: 900
            })
        );
        assert_eq!(p.force_request, Some(RequestOutcome::Done));

        i.force_master = Some("cache-7".into());
        let p = plan(&i);
        assert!(matches!(p.force_request, Some(RequestOutcome::Rejected(_))));
        assert_eq!(
            p.promote.as_deref(),
            Some("cache-1"),
            "planned as without it"
        );

        let mut steady = input(
            2,
            recorded(0, 1),
            vec![
                inst(0, master(900), Some(RoleLabel::Master)),
                inst(1, replica_of(0, 900), Some(RoleLabel::Replica)),
            ],
        );
        steady.force_master = Some("cache-0".into());
        let p = plan(&steady);
        assert_eq!(
            (p.force_request, p.promote),
            (Some(RequestOutcome::Done), None)
        );
    }

    #[test]
    fn an_interrupted_switchover_is_finished_with_failover_to_or_undone() {
        let mut rec = recorded(1, 3);
        rec.target_master = Some("cache-1".into());
        let mut i = input(
            2,
            rec,
            vec![
                inst(0, master(900), Some(RoleLabel::Master)),
                inst(1, replica_of(0, 900), Some(RoleLabel::Replica)),
            ],
        );
        let p = plan(&i);
        assert_eq!(p.switchover_from.as_deref(), Some("cache-0"));
        assert_eq!(p.promote.as_deref(), Some("cache-1"));
        assert_eq!(p.intent.map(|x| x.epoch), Some(3), "the recorded epoch");

        // The old master does not answer but its pod is ready: nothing is promoted yet.
        i.instances[0].redis = None;
        let p = plan(&i);
        assert_eq!((p.promote, p.intent), (None, None));
        assert!(matches!(p.master, MasterState::Unavailable { .. }));
        i.instances[0].pod_ready = false;
        assert_eq!(
            plan(&i).promote.as_deref(),
            Some("cache-1"),
            "its pod is not ready"
        );
        i.instances[0] = inst(0, master(900), Some(RoleLabel::Master));

        // Not in sync with the old master, which still takes writes: it stays the master.
        i.instances[1] = inst(1, fenced(400), Some(RoleLabel::Replica));
        let p = plan(&i);
        assert_eq!(p.promote, None);
        assert_eq!(
            p.change,
            Some(Change::RolledBack {
                target: "cache-1".into()
            })
        );
        let intent = p.intent.expect("intent");
        assert_eq!(
            (intent.master.as_str(), intent.epoch, intent.promotes),
            ("cache-0", 3, false)
        );
        assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
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
        assert_eq!(p.change, Some(Change::Resume));
        assert_eq!(p.promote.as_deref(), Some("cache-1"));
        assert_eq!(rewired(&p.rewire), names(&["cache-0"]));
    }

    #[test]
    fn an_unreachable_master_is_only_suspected_before_down_after() {
        let p = plan(&down_master(
            Duration::from_millis(900),
            vec![
                inst(0, None, Some(RoleLabel::Master)),
                inst(1, lost_link_to(0, 10, 9), Some(RoleLabel::Replica)),
            ],
        ));
        assert_eq!(p.master_down, Some(MasterDown::Suspected));
        assert_eq!((p.intent, p.promote), (None, None));
        assert!(
            p.unlabel.is_empty() && p.rewire.is_empty(),
            "nothing moves while suspected"
        );
    }

    #[test]
    fn only_the_operator_being_cut_off_is_not_a_failure() {
        let p = plan(&down_master(
            LONG,
            vec![
                inst(0, None, Some(RoleLabel::Master)),
                inst(1, replica_of(0, 10), Some(RoleLabel::Replica)),
                inst(2, replica_of(0, 10), Some(RoleLabel::Replica)),
            ],
        ));
        assert_eq!(p.master_down, Some(MasterDown::Subjective));
        assert_eq!(p.promote, None);
    }

    #[test]
    fn replicas_losing_their_link_corroborate_and_the_most_advanced_is_promoted() {
        let p = plan(&down_master(
            LONG,
            vec![
                inst(0, None, Some(RoleLabel::Master)),
                inst(1, lost_link_to(0, 500, 6), Some(RoleLabel::Replica)),
                inst(2, lost_link_to(0, 700, 6), Some(RoleLabel::Replica)),
            ],
        ));
        assert!(matches!(p.master_down, Some(MasterDown::Objective { .. })));
        let intent = p.intent.expect("intent");
        assert_eq!((intent.master.as_str(), intent.epoch), ("cache-2", 5));
        assert_eq!(p.unlabel, names(&["cache-0"]));
        assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
        assert_eq!(p.label_master.as_deref(), Some("cache-2"));
    }

    #[test]
    fn a_minority_of_replicas_losing_the_link_does_not_corroborate() {
        let p = plan(&down_master(
            LONG,
            vec![
                inst(0, None, Some(RoleLabel::Master)),
                inst(1, lost_link_to(0, 500, 6), Some(RoleLabel::Replica)),
                inst(2, replica_of(0, 700), Some(RoleLabel::Replica)),
            ],
        ));
        assert_eq!(p.master_down, Some(MasterDown::Subjective));
    }

    #[test]
    fn an_unready_or_missing_master_pod_corroborates() {
        let mut master_pod = inst(0, None, Some(RoleLabel::Master));
        master_pod.pod_ready = false;
        let replicas = vec![
            inst(1, replica_of(0, 5), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 5), Some(RoleLabel::Replica)),
        ];
        let p = plan(&down_master(
            LONG,
            [vec![master_pod], replicas.clone()].concat(),
        ));
        assert_eq!(
            p.promote.as_deref(),
            Some("cache-1"),
            "equal offsets: lowest ordinal"
        );
        let p = plan(&down_master(LONG, replicas));
        assert!(
            matches!(p.master_down, Some(MasterDown::Objective { ref evidence }) if evidence.contains("gone"))
        );
        assert_eq!(p.promote.as_deref(), Some("cache-1"));
    }

    #[test]
    fn priority_breaks_offset_ties_and_zero_is_never_promoted() {
        let mut a = inst(1, lost_link_to(0, 500, 9), Some(RoleLabel::Replica));
        let mut b = inst(2, lost_link_to(0, 500, 9), Some(RoleLabel::Replica));
        a.priority = 50;
        b.priority = 10;
        let p = plan(&down_master(LONG, vec![a.clone(), b.clone()]));
        assert_eq!(p.promote.as_deref(), Some("cache-2"));
        b.priority = 0;
        let p = plan(&down_master(LONG, vec![a, b]));
        assert_eq!(p.promote.as_deref(), Some("cache-1"));
    }

    #[test]
    fn a_replica_in_full_sync_is_never_promoted() {
        let mut syncing = lost_link_to(0, 900, 9).expect("info");
        if let Role::Replica {
            sync_in_progress, ..
        } = &mut syncing.role
        {
            *sync_in_progress = true;
        }
        let p = plan(&down_master(
            LONG,
            vec![
                inst(1, Some(syncing), Some(RoleLabel::Replica)),
                inst(2, lost_link_to(0, 10, 9), Some(RoleLabel::Replica)),
            ],
        ));
        assert_eq!(p.promote.as_deref(), Some("cache-2"));
    }

    #[test]
    fn disabled_failover_and_cooldown_keep_the_master_recorded() {
        let instances = vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 5, 9), Some(RoleLabel::Replica)),
        ];
        let mut i = down_master(LONG, instances.clone());
        i.policy.enabled = false;
        let p = plan(&i);
        assert!(
            matches!(p.master, MasterState::Unavailable { why_no_failover: Some(ref w), .. } if w.contains("disabled"))
        );
        assert_eq!(p.promote, None);
        let mut i = down_master(LONG, instances);
        i.policy.cooldown_remaining = Some(Duration::from_secs(3));
        let p = plan(&i);
        assert!(
            matches!(p.master, MasterState::Unavailable { why_no_failover: Some(ref w), .. } if w.contains("recently"))
        );
        assert_eq!(p.promote, None);
    }

    #[test]
    fn no_candidate_no_failover() {
        let p = plan(&down_master(
            LONG,
            vec![
                inst(0, None, Some(RoleLabel::Master)),
                inst(1, None, Some(RoleLabel::Replica)),
            ],
        ));
        assert!(matches!(p.master, MasterState::Unavailable { .. }));
        assert_eq!(p.promote, None);
    }

    #[test]
    fn deleting_the_master_pod_switches_over_to_a_synced_replica() {
        let mut m = inst(0, master(100), Some(RoleLabel::Master));
        m.deleting = true;
        let p = plan(&input(
            3,
            recorded(0, 2),
            vec![
                m,
                inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
                inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
            ],
        ));
        assert_eq!(
            p.change,
            Some(Change::Switchover {
                from: "cache-0".into(),
                reason: "pod cache-0 is being deleted".into(),
            })
        );
        assert_eq!(p.switchover_from.as_deref(), Some("cache-0"));
        assert_eq!(p.promote.as_deref(), Some("cache-1"));
        assert_eq!(p.intent.expect("intent").epoch, 3);
        assert_eq!(p.unlabel, names(&["cache-0"]));
        assert_eq!(
            rewired(&p.rewire),
            names(&["cache-2"]),
            "the leaving master is not rewired"
        );
    }

    #[test]
    fn a_moved_master_pod_gets_its_new_address_recorded() {
        let mut rec = recorded(0, 4);
        rec.master_address = Some("10.244.0.99:6379".into());
        let p = plan(&input(
            1,
            rec,
            vec![inst(0, master(5), Some(RoleLabel::Master))],
        ));
        let intent = p.intent.expect("intent");
        assert_eq!((intent.epoch, intent.promotes), (4, false));
        assert_eq!(intent.address, addr(0));
        assert_eq!(p.change, None);
    }

    #[test]
    fn scale_down_removes_replicas_and_the_master_hands_over_first() {
        let mut behind = replica_of(2, 5).expect("info");
        behind.role = replica_role(addr(2), Some(3));
        let instances = vec![
            inst(0, Some(behind), Some(RoleLabel::Replica)),
            inst(1, replica_of(2, 5), Some(RoleLabel::Replica)),
            inst(2, master(5), Some(RoleLabel::Master)),
        ];
        let p = plan(&input(1, recorded(2, 1), instances.clone()));
        assert_eq!(p.delete, names(&["cache-1"]));
        assert!(p.scale_down_blocked.expect("blocked").contains("cache-2"));
        assert_eq!(
            p.promote, None,
            "no staying replica is linked yet: the master stays"
        );

        let mut linked = instances;
        linked[0].redis = replica_of(2, 5);
        let p = plan(&input(1, recorded(2, 1), linked));
        assert_eq!(p.delete, names(&["cache-1"]));
        assert_eq!(p.promote.as_deref(), Some("cache-0"));
        assert_eq!(p.switchover_from.as_deref(), Some("cache-2"));
        assert_eq!(p.unlabel, names(&["cache-2"]));
        assert!(p.rewire.is_empty(), "FAILOVER itself demotes cache-2");
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
        assert!(p.create.is_empty() && p.rewire.is_empty() && p.delete.is_empty());
    }

    #[test]
    fn leaving_instances_are_never_elected() {
        let p = plan(&input(
            1,
            RecordedRoles::default(),
            vec![inst(0, fenced(1), None), inst(1, fenced(99), None)],
        ));
        assert_eq!(p.delete, names(&["cache-1"]));
        assert_eq!(p.promote.as_deref(), Some("cache-0"));
    }

    fn upstream_names(p: &Plan) -> Vec<(String, String)> {
        p.rewire
            .iter()
            .map(|r| (r.name.clone(), r.upstream.to_string()))
            .collect()
    }

    #[test]
    fn chain_topology_links_each_replica_to_the_previous_one() {
        let mut i = input(
            4,
            recorded(0, 1),
            vec![
                inst(0, master(100), Some(RoleLabel::Master)),
                inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
                inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
                inst(3, replica_of(0, 100), Some(RoleLabel::Replica)),
            ],
        );
        i.topology = Topology::Chain;
        let p = plan(&i);
        assert_eq!(
            upstream_names(&p),
            vec![
                ("cache-2".to_string(), addr(1).to_string()),
                ("cache-3".to_string(), addr(2).to_string())
            ]
        );
        i.topology = Topology::Star;
        assert!(
            plan(&i).rewire.is_empty(),
            "star: everyone follows the master"
        );
    }

    #[test]
    fn a_broken_or_syncing_link_is_skipped_until_it_is_in_sync() {
        let mut i = input(
            3,
            recorded(0, 1),
            vec![
                inst(0, master(100), Some(RoleLabel::Master)),
                inst(1, None, Some(RoleLabel::Replica)),
                inst(2, replica_of(1, 80), Some(RoleLabel::Replica)),
            ],
        );
        i.topology = Topology::Chain;
        assert_eq!(
            upstream_names(&plan(&i)),
            vec![("cache-2".to_string(), addr(0).to_string())],
            "cache-1 is unreachable: cache-2 follows the master"
        );
        i.instances[1].redis = fenced(0);
        i.instances[2].redis = replica_of(0, 100);
        assert_eq!(
            upstream_names(&plan(&i)),
            vec![("cache-1".to_string(), addr(0).to_string())],
            "cache-1 came back: it syncs from the master, cache-2 stays on the master meanwhile"
        );
        i.instances[1].redis = replica_of(0, 100);
        assert_eq!(
            upstream_names(&plan(&i)),
            vec![("cache-2".to_string(), addr(1).to_string())]
        );
    }

    #[test]
    fn after_a_failover_the_chain_is_rebuilt_from_the_new_master() {
        let mut i = down_master(
            LONG,
            vec![
                inst(0, None, Some(RoleLabel::Master)),
                inst(1, lost_link_to(0, 700, 6), Some(RoleLabel::Replica)),
                inst(2, replica_of(1, 690), Some(RoleLabel::Replica)),
            ],
        );
        i.topology = Topology::Chain;
        let p = plan(&i);
        assert_eq!(p.promote.as_deref(), Some("cache-1"));
        assert!(
            p.rewire.is_empty(),
            "cache-2 already follows cache-1, the new head of the chain"
        );
    }

    fn steady_three() -> Vec<ObservedInstance> {
        vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
        ]
    }

    #[test]
    fn a_requested_switchover_goes_to_the_named_synced_replica() {
        let mut i = input(3, recorded(0, 2), steady_three());
        i.switchover_to = Some("cache-2".into());
        let p = plan(&i);
        assert_eq!(p.promote.as_deref(), Some("cache-2"));
        assert_eq!(p.switchover_from.as_deref(), Some("cache-0"));
        assert_eq!(p.intent.as_ref().map(|i| i.epoch), Some(3));
        assert!(
            matches!(p.change, Some(Change::Switchover { ref reason, .. }) if reason.contains("user"))
        );
        assert_eq!(p.request, Some(RequestOutcome::Done));
        assert_eq!(p.unlabel, names(&["cache-0"]));
        assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
        assert!(p.roll.is_none());
    }

    #[test]
    fn a_switchover_request_is_done_rejected_or_waits() {
        let outcome = |wanted: &str, instances: Vec<ObservedInstance>| {
            let mut i = input(3, recorded(0, 2), instances);
            i.switchover_to = Some(wanted.into());
            let p = plan(&i);
            assert_eq!(p.promote, None, "{wanted}");
            p.request.expect("outcome")
        };
        assert_eq!(outcome("cache-0", steady_three()), RequestOutcome::Done);
        assert!(
            matches!(outcome("cache-7", steady_three()), RequestOutcome::Rejected(w) if w.contains("not an instance"))
        );
        let mut never = steady_three();
        never[2].priority = 0;
        assert!(
            matches!(outcome("cache-2", never), RequestOutcome::Rejected(w) if w.contains("priority 0"))
        );
        let mut behind = steady_three();
        behind[2].redis = lost_link_to(0, 50, 2);
        assert!(
            matches!(outcome("cache-2", behind), RequestOutcome::Waiting(w) if w.contains("synced"))
        );
    }

    #[test]
    fn in_a_chain_the_switchover_target_first_moves_under_the_master() {
        let mut i = input(
            3,
            recorded(0, 2),
            vec![
                inst(0, master(100), Some(RoleLabel::Master)),
                inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
                inst(2, replica_of(1, 100), Some(RoleLabel::Replica)),
            ],
        );
        i.topology = Topology::Chain;
        i.switchover_to = Some("cache-2".into());
        let p = plan(&i);
        assert_eq!(p.promote, None);
        assert!(matches!(p.request, Some(RequestOutcome::Waiting(_))));
        assert_eq!(
            upstream_names(&p),
            vec![("cache-2".to_string(), addr(0).to_string())]
        );
    }

    #[test]
    fn the_rolling_update_replaces_replicas_highest_first_then_hands_the_master_over() {
        let mut all = steady_three();
        for i in &mut all {
            i.spec_outdated = true;
        }
        let p = plan(&input(3, recorded(0, 2), all.clone()));
        assert_eq!(p.roll.as_deref(), Some("cache-2"));
        assert_eq!(p.promote, None, "the master goes last");

        let mut replaced = all.clone();
        replaced[2].spec_outdated = false;
        replaced[2].redis = lost_link_to(0, 10, 1);
        replaced[2].pod_ready = false;
        let p = plan(&input(3, recorded(0, 2), replaced.clone()));
        assert_eq!(p.roll, None, "the new cache-2 is not in sync yet");

        replaced[2].redis = replica_of(0, 100);
        replaced[2].pod_ready = true;
        let p = plan(&input(3, recorded(0, 2), replaced.clone()));
        assert_eq!(p.roll.as_deref(), Some("cache-1"));

        replaced[1].spec_outdated = false;
        replaced[1].config_outdated = false;
        let p = plan(&input(3, recorded(0, 2), replaced.clone()));
        assert_eq!(p.roll, None);
        assert_eq!(p.promote.as_deref(), Some("cache-1"));
        assert_eq!(p.switchover_from.as_deref(), Some("cache-0"));
        assert!(
            matches!(p.change, Some(Change::Switchover { ref reason, .. }) if reason.contains("rolling"))
        );
    }

    #[test]
    fn the_rolling_update_waits_while_anything_else_happens() {
        let mut going = steady_three();
        going[2].spec_outdated = true;
        going[1].deleting = true;
        assert_eq!(plan(&input(3, recorded(0, 2), going)).roll, None);
        let mut missing = steady_three();
        missing[1].config_outdated = true;
        missing.pop();
        assert_eq!(plan(&input(3, recorded(0, 2), missing)).roll, None);
        let mut single = vec![inst(0, master(5), Some(RoleLabel::Master))];
        single[0].spec_outdated = true;
        assert_eq!(
            plan(&input(1, recorded(0, 2), single)).roll.as_deref(),
            Some("cache-0"),
            "a lone instance can only be replaced"
        );
    }

    /// Safety rules 1, 5 and 6 as the order of the steps, for every kind of change: stray
    /// master labels go first; the intent is recorded before any instance is touched; the
    /// master label moves only after the promotion; an instance is rewired before it is
    /// labelled replica.
    #[test]
    fn every_plan_runs_its_steps_in_the_safe_order() {
        let mut down = down_master(
            LONG,
            vec![
                inst(0, None, Some(RoleLabel::Master)),
                inst(1, lost_link_to(0, 900, 9), Some(RoleLabel::Replica)),
                inst(2, lost_link_to(0, 800, 9), None),
            ],
        );
        down.instances[0].pod_ready = false;
        let returning = input(
            3,
            recorded(1, 2),
            vec![
                inst(0, master(500), Some(RoleLabel::Master)),
                inst(1, master(900), None),
                inst(2, replica_of(0, 500), Some(RoleLabel::Replica)),
            ],
        );
        let mut bootstrap = input(
            3,
            RecordedRoles::default(),
            vec![
                inst(0, fenced(0), None),
                inst(1, fenced(0), None),
                inst(2, fenced(0), None),
            ],
        );
        bootstrap.policy.bootstrap_grace_over = true;
        let mut switchover = input(3, recorded(0, 1), steady_three());
        switchover.switchover_to = Some("cache-2".into());
        let mut refill = input(
            3,
            recorded(0, 1),
            vec![
                inst(0, fenced(0), Some(RoleLabel::Master)),
                inst(1, lost_link_to(0, 900, 1), Some(RoleLabel::Replica)),
                inst(2, lost_link_to(0, 900, 1), None),
            ],
        );
        refill.policy.enabled = false;
        let mut forced = refill.clone();
        forced.force_master = Some("cache-0".into());
        for (what, i) in [
            ("failover", down),
            ("returning old master", returning),
            ("bootstrap", bootstrap),
            ("switchover", switchover),
            ("refill", refill),
            ("forced", forced),
        ] {
            let steps = plan(&i).steps();
            let at = |f: &dyn Fn(&Step) -> bool| steps.iter().position(f);
            let all = |f: &dyn Fn(&Step) -> bool| -> Vec<usize> {
                steps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| f(s))
                    .map(|(n, _)| n)
                    .collect()
            };
            let intent = at(&|s| matches!(s, Step::RecordIntent(_)));
            let promotion = at(&|s| matches!(s, Step::Promote(_) | Step::SwitchOver { .. }));
            let touches = all(&|s| {
                matches!(
                    s,
                    Step::Promote(_)
                        | Step::SwitchOver { .. }
                        | Step::LabelMaster(_)
                        | Step::Rewire(_)
                        | Step::LabelReplica(_)
                )
            });
            assert!(
                promotion.is_some() || what == "returning old master",
                "{what}: {steps:?}"
            );
            for unlabel in all(&|s| matches!(s, Step::Unlabel(_))) {
                assert!(
                    touches.iter().all(|t| unlabel < *t),
                    "rule 1, {what}: {steps:?}"
                );
                assert!(
                    intent.is_none_or(|x| unlabel < x),
                    "rule 1, {what}: {steps:?}"
                );
            }
            if let Some(intent) = intent {
                assert!(
                    touches.iter().all(|t| intent < *t),
                    "rule 5, {what}: {steps:?}"
                );
            }
            if let (Some(p), Some(l)) = (promotion, at(&|s| matches!(s, Step::LabelMaster(_)))) {
                assert!(
                    p < l,
                    "promotion verified before the label, {what}: {steps:?}"
                );
            }
            for (n, step) in steps.iter().enumerate() {
                if let Step::LabelReplica(name) = step {
                    let rewired = at(&|s| matches!(s, Step::Rewire(r) if r.name == *name));
                    assert!(rewired.is_none_or(|r| r < n), "rule 6, {what}: {steps:?}");
                }
            }
        }
    }
}
