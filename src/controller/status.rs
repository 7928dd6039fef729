//! Building the status from what was observed and decided. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::plan::{MasterState, ObservedInstance, Plan};
use crate::api::{FailoverRecord, InstanceStatus, Phase, RedisReplicationStatus};
use crate::redis::Role;

pub const READY: &str = "Ready";
pub const REPLICATING: &str = "Replicating";
pub const SCALE_DOWN_BLOCKED: &str = "ScaleDownBlocked";

/// Inputs of the status besides the plan.
pub struct StatusInput<'a> {
    pub previous: &'a RedisReplicationStatus,
    pub generation: Option<i64>,
    pub desired_instances: u32,
    pub instances: &'a [ObservedInstance],
    pub now: Timestamp,
    /// The failover this round completed, if any.
    pub failover: Option<FailoverRecord>,
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
        .map(|i| instance_status(i, master_offset))
        .collect();
    let ready_instances = instances.iter().filter(|i| i.ready).count() as i32;
    let replicas_linked = instances
        .iter()
        .filter(|i| i.role == "replica" && i.link_status.as_deref() == Some("up"))
        .count();
    let desired = input.desired_instances as usize;
    let expected_replicas = desired.saturating_sub(1);
    let acting = matches!(plan.master, MasterState::Acting { .. });
    let all_ready = acting
        && instances.len() == desired
        && ready_instances as usize == desired
        && replicas_linked == expected_replicas;

    let phase = match &plan.master {
        MasterState::AwaitingBootstrap => Phase::Bootstrapping,
        MasterState::Unavailable { .. } => Phase::MasterUnavailable,
        MasterState::Acting { .. } if all_ready => Phase::Ready,
        MasterState::Acting { .. } => Phase::Degraded,
    };

    let mut conditions = previous.conditions.clone();
    let ready_message = match &plan.master {
        MasterState::AwaitingBootstrap => "waiting for a first instance to become master".into(),
        MasterState::Unavailable {
            name,
            why_no_failover,
            ..
        } => match why_no_failover {
            Some(why) => format!("master {name} is unavailable and is not replaced: {why}"),
            None => format!("master {name} is unreachable"),
        },
        MasterState::Acting { name, .. } => format!(
            "master {name}, {ready_instances}/{desired} instances ready, \
             {replicas_linked}/{expected_replicas} replicas linked"
        ),
    };
    set_condition(
        &mut conditions,
        READY,
        all_ready,
        if all_ready {
            "AllInstancesReady"
        } else {
            phase_reason(phase)
        },
        &ready_message,
        input,
    );
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

    RedisReplicationStatus {
        phase: Some(phase),
        observed_generation: input.generation,
        conditions,
        current_master,
        master_address,
        epoch,
        // Cleared by the status written after the steps: only an interrupted change leaves it.
        target_master: None,
        ready_instances,
        instances,
        last_failover: input
            .failover
            .clone()
            .or_else(|| previous.last_failover.clone()),
    }
}

fn phase_reason(phase: Phase) -> &'static str {
    match phase {
        Phase::Bootstrapping => "Bootstrapping",
        Phase::Ready => "AllInstancesReady",
        Phase::Degraded => "InstancesNotReady",
        Phase::MasterUnavailable => "MasterUnavailable",
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

fn instance_status(inst: &ObservedInstance, master_offset: Option<i64>) -> InstanceStatus {
    let address = inst.address().map(|a| a.to_string());
    let Some(info) = &inst.redis else {
        return InstanceStatus {
            name: inst.name.clone(),
            role: "unknown".into(),
            ready: inst.pod_ready,
            address,
            ..InstanceStatus::default()
        };
    };
    let (role, link) = match &info.role {
        Role::Master => ("master", None),
        Role::Replica { .. } if info.is_fenced() => ("fenced", None),
        Role::Replica { link_up, .. } => ("replica", Some(if *link_up { "up" } else { "down" })),
    };
    let lag = match (link, master_offset) {
        (Some(_), Some(m)) => Some((m - info.offset).max(0)),
        _ => None,
    };
    InstanceStatus {
        name: inst.name.clone(),
        role: role.into(),
        ready: inst.pod_ready,
        address,
        replication_offset: Some(info.offset),
        lag_bytes: lag,
        link_status: link.map(str::to_string),
    }
}

/// Sets a condition, keeping its transition time unless its status flips.
fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    input: &StatusInput<'_>,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(input.now),
    };
    let condition = Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        last_transition_time,
        observed_generation: input.generation,
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
        };
        let p = plan(&PlanInput {
            desired_instances: 3,
            recorded,
            instances: instances.clone(),
            policy: crate::controller::plan::FailoverPolicy {
                bootstrap_grace_over: true,
                ..Default::default()
            },
        });
        build(
            &StatusInput {
                previous,
                generation: Some(2),
                desired_instances: 3,
                instances: &instances,
                now: Timestamp::from_second(1_000).expect("time"),
                failover: None,
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
        assert_eq!(s.instances[1].link_status.as_deref(), Some("up"));
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
}
