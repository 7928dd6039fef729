//! Building the status from what was observed and decided. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::plan::{MasterState, ObservedInstance, Plan, PodProblem, RequestOutcome};
use crate::api::{
    FailoverRecord, InstanceRole, InstanceStatus, LinkStatus, Phase, RedisReplicationStatus,
    ReplicaOfStatus,
};
use crate::redis::Role;

mod requests;
pub use requests::{FENCED, HIBERNATED, REQUESTS_ACCEPTED};

pub const READY: &str = "Ready";
pub const REPLICATING: &str = "Replicating";
pub const SCALE_DOWN_BLOCKED: &str = "ScaleDownBlocked";
pub const ROLLING_UPDATE: &str = "RollingUpdate";
/// False while a pod cannot run (unschedulable, image or configuration unusable, crash-looping).
pub const INSTANCES_HEALTHY: &str = "InstancesHealthy";
pub const SWITCHOVER_PENDING: &str = "SwitchoverPending";
/// True while `spec.persistence` is `None`: a restarted instance comes back empty.
pub const PERSISTENCE_DISABLED: &str = "PersistenceDisabled";

/// Inputs of the status besides the plan.
pub struct StatusInput<'a> {
    pub previous: &'a RedisReplicationStatus,
    pub generation: Option<i64>,
    pub desired_instances: u32,
    pub instances: &'a [ObservedInstance],
    pub now: Timestamp,
    /// The failover this round completed, if any.
    pub failover: Option<FailoverRecord>,
    /// The password Secret cannot be used (reason, message): the set is not Ready, whatever
    /// the instances do, until it is fixed.
    pub secret_problem: Option<(&'static str, String)>,
    /// `spec.persistence` is `None`.
    pub persistence_disabled: bool,
    /// The user's fencing and hibernation requests, as the planner took them.
    pub requests: &'a super::requests::Requests,
    /// The link to the external master (`spec.replicaOf`), kept until the set is promoted.
    pub replica_of: Option<ReplicaOfStatus>,
}

pub fn build(input: &StatusInput<'_>, plan: &Plan) -> RedisReplicationStatus {
    let previous = input.previous;
    let (current_master, master_address, epoch) = match (&plan.intent, &plan.master) {
        (Some(intent), _) => (
            Some(intent.master.clone()),
            Some(intent.address.to_string()),
            intent.epoch,
        ),
        _ => (
            previous.current_master.clone(),
            previous.master_address.clone(),
            previous.epoch,
        ),
    };
    let master_offset = master_offset(input.instances, current_master.as_deref());
    let instances: Vec<InstanceStatus> = input
        .instances
        .iter()
        .map(|i| instance_status(i, master_offset, input.instances))
        .collect();
    let ready_instances = instances.iter().filter(|i| i.ready).count() as i32;
    let replicas_linked = instances
        .iter()
        .filter(|i| i.role == InstanceRole::Replica && i.link_status == Some(LinkStatus::Up))
        .count();
    let desired = input.desired_instances as usize;
    let acting = matches!(plan.master, MasterState::Acting { .. });
    // The designated master of a following set is itself a replica, of the external master.
    let following = acting && input.replica_of.is_some();
    let expected_replicas = desired.saturating_sub(usize::from(!following));
    let all_ready = acting
        && instances.len() == desired
        && ready_instances as usize == desired
        && replicas_linked == expected_replicas;

    let phase = match &plan.master {
        MasterState::AwaitingBootstrap => Phase::Bootstrapping,
        MasterState::Unavailable { .. } => Phase::MasterUnavailable,
        MasterState::Fenced { .. } => Phase::Fenced,
        MasterState::Hibernating => Phase::Hibernated,
        MasterState::Acting { .. } if all_ready && following => Phase::Following,
        MasterState::Acting { .. } if all_ready => Phase::Ready,
        MasterState::Acting { .. } => Phase::Degraded,
    };

    let mut conditions = previous.conditions.clone();
    let ready_message = match &plan.master {
        MasterState::AwaitingBootstrap => "waiting for a first instance to become master".into(),
        MasterState::Fenced { name } => {
            format!("master {name} is fenced by request: the set takes no writes")
        }
        MasterState::Hibernating => "the set hibernates".into(),
        MasterState::Unavailable {
            name,
            why_no_failover,
            ..
        } => match why_no_failover {
            Some(why) => format!("master {name} is unavailable and is not replaced: {why}"),
            None => format!("master {name} is unreachable"),
        },
        MasterState::Acting { name, .. } if following => format!(
            "designated master {name} follows the external master {} (read-only), \
             {ready_instances}/{desired} instances ready, {replicas_linked}/{expected_replicas} \
             linked",
            input
                .replica_of
                .as_ref()
                .and_then(|r| r.source.as_deref())
                .unwrap_or("(unresolved)")
        ),
        MasterState::Acting { name, .. } => format!(
            "master {name}, {ready_instances}/{desired} instances ready, \
             {replicas_linked}/{expected_replicas} replicas linked"
        ),
    };
    // A stuck pod is the likeliest reason the set is not ready: say so in Ready too.
    let problems: Vec<(&str, &PodProblem)> = input
        .instances
        .iter()
        .filter_map(|i| Some((i.name.as_str(), i.problem.as_ref()?)))
        .collect();
    let problems_message = problems
        .iter()
        .map(|(pod, p)| format!("{pod}: {}: {}", p.reason, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    let (ready_reason, ready_message) = match problems.first() {
        Some((_, first)) if !all_ready => (
            first.reason.as_str(),
            format!("{ready_message}; {problems_message}"),
        ),
        _ if all_ready => (phase_reason(phase), ready_message),
        _ => (phase_reason(phase), ready_message),
    };
    match &input.secret_problem {
        Some((reason, message)) => {
            set_condition(&mut conditions, READY, false, reason, message, input)
        }
        None => set_condition(
            &mut conditions,
            READY,
            all_ready,
            ready_reason,
            &ready_message,
            input,
        ),
    }
    match problems.first() {
        Some((_, first)) => set_condition(
            &mut conditions,
            INSTANCES_HEALTHY,
            false,
            &first.reason,
            &problems_message,
            input,
        ),
        None => set_condition(
            &mut conditions,
            INSTANCES_HEALTHY,
            true,
            "NoStuckPods",
            "every pod is scheduled and its container starts",
            input,
        ),
    }
    let replicating = acting && replicas_linked == expected_replicas;
    set_condition(
        &mut conditions,
        REPLICATING,
        replicating,
        if replicating {
            "ReplicasLinked"
        } else {
            "ReplicasNotLinked"
        },
        &format!("{replicas_linked}/{expected_replicas} replicas linked to the master"),
        input,
    );
    match &plan.scale_down_blocked {
        Some(message) => set_condition(
            &mut conditions,
            SCALE_DOWN_BLOCKED,
            true,
            "MasterWouldBeRemoved",
            message,
            input,
        ),
        None => conditions.retain(|c| c.type_ != SCALE_DOWN_BLOCKED),
    }
    let updated_instances = input.instances.iter().filter(|i| !i.outdated()).count();
    if updated_instances < input.instances.len() {
        let step = match &plan.roll {
            Some(name) => format!("replacing {name}"),
            None if plan.change.is_some() => "the master hands over first".into(),
            None => "waiting for every instance to be ready and in sync".into(),
        };
        set_condition(
            &mut conditions,
            ROLLING_UPDATE,
            true,
            "InstancesOutdated",
            &format!(
                "{updated_instances}/{} instances run the current spec; {step}",
                input.instances.len()
            ),
            input,
        );
    } else {
        conditions.retain(|c| c.type_ != ROLLING_UPDATE);
    }
    match &plan.request {
        Some(RequestOutcome::Waiting(why)) => set_condition(
            &mut conditions,
            SWITCHOVER_PENDING,
            true,
            "TargetNotReady",
            why,
            input,
        ),
        _ => conditions.retain(|c| c.type_ != SWITCHOVER_PENDING),
    }

    if input.persistence_disabled {
        set_condition(
            &mut conditions,
            PERSISTENCE_DISABLED,
            true,
            "PersistenceNone",
            "spec.persistence is None: an instance whose Redis process restarts comes back empty \
             and must be refilled from a replica; a set that loses every instance loses its data",
            input,
        );
    } else {
        conditions.retain(|c| c.type_ != PERSISTENCE_DISABLED);
    }
    let fenced_instances = requests::fenced_instances(input);
    let hibernation = requests::hibernation(input, plan);
    requests::set_conditions(&mut conditions, input, &fenced_instances, hibernation);
    let hand_back_to = plan
        .intent
        .as_ref()
        .map_or_else(|| previous.hand_back_to.clone(), |i| i.hand_back_to.clone())
        .filter(|h| current_master.as_ref() != Some(h));

    let master_silent_since = if plan.record_silence && current_master == previous.current_master {
        previous
            .master_silent_since
            .clone()
            .or(Some(Time(input.now)))
    } else {
        None
    };
    RedisReplicationStatus {
        phase: Some(phase),
        observed_generation: input.generation,
        conditions,
        current_master,
        master_address,
        epoch,
        // Cleared by the status written after the steps: only an interrupted change leaves it.
        target_master: None,
        master_silent_since,
        hand_back_to,
        fenced_instances,
        hibernation,
        ready_instances,
        updated_instances: updated_instances as i32,
        instances,
        last_failover: input
            .failover
            .clone()
            .or_else(|| previous.last_failover.clone()),
        // Written by the restore's own steps (controller::restore).
        restore: previous.restore.clone(),
        replica_of: input.replica_of.clone(),
    }
}

/// The status while nothing can be observed (the password Secret is unusable and no password is
/// known yet): the previous one, with Ready saying why.
pub fn blocked(
    previous: &RedisReplicationStatus,
    generation: Option<i64>,
    now: Timestamp,
    reason: &str,
    message: &str,
) -> RedisReplicationStatus {
    let requests = super::requests::Requests::default();
    let input = StatusInput {
        previous,
        generation,
        desired_instances: 0,
        instances: &[],
        now,
        failover: None,
        secret_problem: None,
        persistence_disabled: false,
        requests: &requests,
        replica_of: None,
    };
    let mut status = previous.clone();
    set_condition(
        &mut status.conditions,
        READY,
        false,
        reason,
        message,
        &input,
    );
    status.observed_generation = generation;
    status
}

fn phase_reason(phase: Phase) -> &'static str {
    match phase {
        Phase::Bootstrapping => "Bootstrapping",
        Phase::Ready => "AllInstancesReady",
        Phase::Degraded => "InstancesNotReady",
        Phase::MasterUnavailable => "MasterUnavailable",
        Phase::Fenced => "MasterFenced",
        Phase::Hibernated => "Hibernated",
        Phase::Following => "FollowingExternalMaster",
    }
}

fn master_offset(instances: &[ObservedInstance], master: Option<&str>) -> Option<i64> {
    let master = instances.iter().find(|i| Some(i.name.as_str()) == master)?;
    master
        .redis
        .as_ref()
        .filter(|r| r.is_master())
        .map(|r| r.offset)
}

fn instance_status(
    inst: &ObservedInstance,
    master_offset: Option<i64>,
    all: &[ObservedInstance],
) -> InstanceStatus {
    let address = inst.address().map(|a| a.to_string());
    let Some(info) = &inst.redis else {
        return InstanceStatus {
            name: inst.name.clone(),
            role: InstanceRole::Unknown,
            ready: inst.pod_ready,
            address,
            ..InstanceStatus::default()
        };
    };
    let (role, link) = match &info.role {
        Role::Master => (InstanceRole::Master, None),
        Role::Replica { .. } if info.is_fenced() => (InstanceRole::Fenced, None),
        Role::Replica { link_up, .. } => (
            InstanceRole::Replica,
            Some(if *link_up {
                LinkStatus::Up
            } else {
                LinkStatus::Down
            }),
        ),
    };
    let lag = match (link, master_offset) {
        (Some(_), Some(m)) => Some((m - info.offset).max(0)),
        _ => None,
    };
    InstanceStatus {
        name: inst.name.clone(),
        role,
        ready: inst.pod_ready,
        address,
        replication_offset: Some(info.offset),
        lag_bytes: lag,
        lag_seconds: link.and(lag_seconds(inst, all)),
        link_status: link,
    }
}

/// Sets a condition, keeping its transition time unless its status flips.
/// How long since `inst` last acknowledged its upstream, as the upstream lists it.
fn lag_seconds(inst: &ObservedInstance, all: &[ObservedInstance]) -> Option<i64> {
    let address = inst.address()?;
    all.iter()
        .filter_map(|i| i.redis.as_ref())
        .flat_map(|r| &r.replicas)
        .find(|r| r.address == address)?
        .lag_seconds
}

fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    input: &StatusInput<'_>,
) {
    put_condition(
        conditions,
        type_,
        status,
        reason,
        message,
        input.generation,
        input.now,
    );
}

/// Sets condition `type_`, keeping its transition time while its status stays.
pub(super) fn put_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        last_transition_time,
        observed_generation: generation,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::{PlanInput, RecordedRoles, plan};
    use crate::redis::{Address, ReplicationInfo};

    fn inst(ordinal: u32, role: Role, offset: i64, ready: bool) -> ObservedInstance {
        ObservedInstance {
            name: format!("cache-{ordinal}"),
            ordinal,
            ip: Some(format!("127.0.0.{}", 10 + ordinal)),
            deleting: false,
            pod_ready: ready,
            role_label: None,
            priority: 100,
            redis: Some(ReplicationInfo::fixture(role, offset)),
            spec_outdated: false,
            config_outdated: false,
            problem: None,
            stopped: None,
            still: None,
            silent_for: None,
            silent_at_offset: None,
        }
    }

    fn replica(link_up: bool) -> Role {
        Role::Replica {
            master: Address::new("127.0.0.10", 6379),
            link_up,
            sync_in_progress: false,
            link_down_seconds: None,
        }
    }

    fn status_for(
        instances: Vec<ObservedInstance>,
        previous: &RedisReplicationStatus,
    ) -> RedisReplicationStatus {
        let recorded = RecordedRoles {
            current_master: previous.current_master.clone(),
            master_address: previous.master_address.clone(),
            epoch: previous.epoch,
            target_master: None,
            hand_back_to: None,
            fenced: Vec::new(),
            hibernation: None,
            following: false,
        };
        let p = plan(&PlanInput {
            desired_instances: 3,
            recorded,
            instances: instances.clone(),
            policy: crate::controller::plan::FailoverPolicy {
                bootstrap_grace_over: true,
                ..Default::default()
            },
            topology: crate::api::Topology::Star,
            switchover_to: None,
            force_master: None,
            fencing: Default::default(),
            hibernate: false,
            following: None,
        });
        build(
            &StatusInput {
                previous,
                generation: Some(2),
                desired_instances: 3,
                instances: &instances,
                now: Timestamp::from_second(1_000).expect("time"),
                failover: None,
                secret_problem: None,
                persistence_disabled: false,
                requests: &Default::default(),
                replica_of: None,
            },
            &p,
        )
    }

    fn steady() -> RedisReplicationStatus {
        RedisReplicationStatus {
            current_master: Some("cache-0".into()),
            master_address: Some("127.0.0.10:6379".into()),
            epoch: 1,
            ..RedisReplicationStatus::default()
        }
    }

    #[test]
    fn all_linked_and_ready_is_ready() {
        let s = status_for(
            vec![
                inst(0, Role::Master, 100, true),
                inst(1, replica(true), 90, true),
                inst(2, replica(true), 100, true),
            ],
            &steady(),
        );
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.ready_instances, 3);
        assert_eq!(s.instances[1].lag_bytes, Some(10));
        assert_eq!(s.instances[1].link_status, Some(LinkStatus::Up));
        let ready = s
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .expect("ready condition");
        assert_eq!(ready.status, "True");
        assert_eq!(ready.observed_generation, Some(2));
    }

    #[test]
    fn a_broken_link_degrades_and_transition_time_is_kept_when_unchanged() {
        let instances = vec![
            inst(0, Role::Master, 100, true),
            inst(1, replica(false), 90, false),
            inst(2, replica(true), 100, true),
        ];
        let first = status_for(instances.clone(), &steady());
        assert_eq!(first.phase, Some(Phase::Degraded));
        let mut previous = first.clone();
        previous.conditions[0].last_transition_time =
            Time(Timestamp::from_second(5).expect("time"));
        let second = status_for(instances, &previous);
        assert_eq!(
            second.conditions[0].last_transition_time,
            Time(Timestamp::from_second(5).expect("time"))
        );
    }

    #[test]
    fn bootstrap_intent_is_reflected() {
        let s = status_for(
            vec![inst(0, replica(false), 0, false)],
            &RedisReplicationStatus::default(),
        );
        assert_eq!(s.current_master.as_deref(), Some("cache-0"));
        assert_eq!(s.epoch, 1);
        assert_eq!(s.phase, Some(Phase::Degraded));
    }

    #[test]
    fn a_stuck_pod_is_named_in_ready_and_instances_healthy() {
        let mut stuck = inst(2, replica(false), 0, false);
        stuck.problem = Some(PodProblem {
            reason: "CrashLoopBackOff".into(),
            message: "back-off 10s restarting failed container".into(),
        });
        let s = status_for(
            vec![
                inst(0, Role::Master, 100, true),
                inst(1, replica(true), 100, true),
                stuck,
            ],
            &steady(),
        );
        let condition = |t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .cloned()
                .expect("condition")
        };
        let healthy = condition(INSTANCES_HEALTHY);
        assert_eq!(
            (healthy.status.as_str(), healthy.reason.as_str()),
            ("False", "CrashLoopBackOff")
        );
        assert!(
            healthy
                .message
                .starts_with("cache-2: CrashLoopBackOff: back-off")
        );
        let ready = condition(READY);
        assert_eq!(ready.reason, "CrashLoopBackOff");
        assert!(
            ready.message.contains("cache-2: CrashLoopBackOff"),
            "{}",
            ready.message
        );
    }
}
