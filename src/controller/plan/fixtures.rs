//! Observations and recorded roles of a three-instance set `cache`, for the planner's tests and
//! the executor's.

use std::time::Duration;

use super::{FailoverPolicy, ObservedInstance, PlanInput, RecordedRoles};
use crate::api::Topology;
use crate::isolation::Stillness;
use crate::labels::RoleLabel;
use crate::redis::{Address, FENCE_HOST, FENCE_PORT, REDIS_PORT, ReplicationInfo, Role};

/// Longer than any downAfter or promotion hold the tests use.
pub(crate) const LONG: Duration = Duration::from_secs(6);

/// The names of the instances a plan rewires.
pub(crate) fn rewired(rewire: &[super::Rewire]) -> Vec<String> {
    rewire.iter().map(|r| r.name.clone()).collect()
}

pub(crate) fn info(role: Role, offset: i64) -> ReplicationInfo {
    ReplicationInfo::fixture(role, offset)
}

pub(crate) fn replica_role(master: Address, link_down_seconds: Option<u64>) -> Role {
    Role::Replica {
        master,
        link_up: link_down_seconds.is_none(),
        sync_in_progress: false,
        link_down_seconds,
    }
}

pub(crate) fn fenced(offset: i64) -> Option<ReplicationInfo> {
    Some(info(
        replica_role(Address::new(FENCE_HOST, FENCE_PORT), Some(0)),
        offset,
    ))
}

pub(crate) fn master(offset: i64) -> Option<ReplicationInfo> {
    Some(info(Role::Master, offset))
}

pub(crate) fn replica_of(ordinal: u32, offset: i64) -> Option<ReplicationInfo> {
    Some(info(replica_role(addr(ordinal), None), offset))
}

pub(crate) fn lost_link_to(ordinal: u32, offset: i64, seconds: u64) -> Option<ReplicationInfo> {
    Some(info(replica_role(addr(ordinal), Some(seconds)), offset))
}

pub(crate) fn addr(ordinal: u32) -> Address {
    Address::new(ip(ordinal), REDIS_PORT)
}

pub(crate) fn ip(ordinal: u32) -> String {
    format!("10.244.0.{}", 10 + ordinal)
}

pub(crate) fn inst(
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
        stopped: None,
        still: None,
        silent_for: None,
        silent_at_offset: None,
    }
}

pub(crate) fn input(
    desired: u32,
    recorded: RecordedRoles,
    instances: Vec<ObservedInstance>,
) -> PlanInput {
    PlanInput {
        desired_instances: desired,
        recorded,
        instances,
        policy: FailoverPolicy::default(),
        topology: Topology::Star,
        switchover_to: None,
        force_master: None,
        fencing: Default::default(),
        hibernate: false,
        following: None,
    }
}

pub(crate) fn recorded(master: u32, epoch: i64) -> RecordedRoles {
    RecordedRoles {
        current_master: Some(format!("cache-{master}")),
        master_address: Some(addr(master).to_string()),
        epoch,
        target_master: None,
        hand_back_to: None,
        fenced: Vec::new(),
        hibernation: None,
        following: false,
    }
}

/// A master down for `down_for` with these instances (cache-0 is the recorded master), recorded
/// silent as long. A replica whose link is down has been still for as long as it is down.
pub(crate) fn down_master(down_for: Duration, mut instances: Vec<ObservedInstance>) -> PlanInput {
    for i in &mut instances {
        if let Some(ReplicationInfo {
            role:
                Role::Replica {
                    link_down_seconds: Some(s),
                    ..
                },
            ..
        }) = &i.redis
        {
            let still = Duration::from_secs(*s);
            i.still = Some(Stillness {
                state: still,
                upstream: still,
                state_at_most: still,
            });
        }
    }
    let mut i = input(3, recorded(0, 4), instances);
    i.policy.master_unreachable_for = Some(down_for);
    i.policy.silence_recorded_for = Some(down_for);
    i
}
