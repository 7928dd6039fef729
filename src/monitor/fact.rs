//! What of a probe the planner acts on. The monitor wakes a replication's reconcile only when
//! one of these facts changes, not when an offset merely moves.

use std::time::Duration;

use crate::redis::{Address, ReplicationInfo, Role};

/// The planner-relevant summary of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    Unreachable,
    Master {
        /// Replicas it reports (a returning replica, or one gone).
        replicas: usize,
    },
    Replica {
        /// `None`: fenced (following nobody).
        upstream: Option<Address>,
        /// Linked and not in a full sync: what "synced" means to the planner.
        synced: bool,
        /// The link has been down for at least `downAfter`: corroboration of a master failure.
        lost_for_down_after: bool,
    },
}

impl Fact {
    pub fn of(info: Option<&ReplicationInfo>, down_after: Duration) -> Self {
        let Some(info) = info else {
            return Self::Unreachable;
        };
        match &info.role {
            Role::Master => Self::Master {
                replicas: info.replicas.len(),
            },
            Role::Replica {
                link_down_seconds, ..
            } => Self::Replica {
                upstream: info.following().cloned(),
                synced: info.is_synced_replica(),
                lost_for_down_after: link_down_seconds
                    .is_some_and(|s| Duration::from_secs(s) >= down_after),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(link_down_seconds: Option<u64>, offset: i64) -> ReplicationInfo {
        ReplicationInfo::fixture(
            Role::Replica {
                master: Address::new("10.244.0.10", 6379),
                link_up: link_down_seconds.is_none(),
                sync_in_progress: false,
                link_down_seconds,
            },
            offset,
        )
    }

    #[test]
    fn moving_offsets_are_not_a_new_fact() {
        let d = Duration::from_secs(5);
        assert_eq!(
            Fact::of(Some(&replica(None, 100)), d),
            Fact::of(Some(&replica(None, 9_000)), d)
        );
        let master = ReplicationInfo::fixture(Role::Master, 1);
        let busier = ReplicationInfo::fixture(Role::Master, 2);
        assert_eq!(Fact::of(Some(&master), d), Fact::of(Some(&busier), d));
    }

    #[test]
    fn a_link_lost_for_down_after_is_a_new_fact_once() {
        let d = Duration::from_secs(5);
        let fresh = Fact::of(Some(&replica(Some(1), 100)), d);
        let still = Fact::of(Some(&replica(Some(4), 100)), d);
        let lost = Fact::of(Some(&replica(Some(5), 100)), d);
        assert_ne!(Fact::of(Some(&replica(None, 100)), d), fresh, "link down");
        assert_eq!(fresh, still);
        assert_ne!(still, lost, "crossed downAfter");
        assert_eq!(lost, Fact::of(Some(&replica(Some(60), 100)), d));
        assert_eq!(Fact::of(None, d), Fact::Unreachable);
    }
}
