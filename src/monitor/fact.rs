//! What of a probe the planner acts on. The monitor wakes a replication's reconcile only when
//! one of these facts changes, not when an offset merely moves.

use std::time::Duration;

use crate::isolation::promotion_hold;
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
        /// Its state has not changed for `downAfter` and the promotion hold: it has heard
        /// nothing from a master whose heartbeat moves its offset (rules 3 and 9).
        still: bool,
    },
}

impl Fact {
    /// `unchanged_for`: how long the instance's replication state has been the same.
    pub fn of(
        info: Option<&ReplicationInfo>,
        unchanged_for: Duration,
        down_after: Duration,
    ) -> Self {
        let Some(info) = info else {
            return Self::Unreachable;
        };
        match &info.role {
            Role::Master => Self::Master {
                replicas: info.replicas.len(),
            },
            Role::Replica { .. } => Self::Replica {
                upstream: info.following().cloned(),
                synced: info.is_synced_replica(),
                still: unchanged_for >= down_after.max(promotion_hold(down_after)),
            },
        }
    }
}

/// What two consecutive answers have in common.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sameness {
    /// Role, upstream and link.
    pub upstream: bool,
    /// That, and the offset.
    pub state: bool,
}

impl Sameness {
    pub fn of(a: Option<&ReplicationInfo>, b: Option<&ReplicationInfo>) -> Self {
        let (Some(a), Some(b)) = (a, b) else {
            return Self {
                upstream: false,
                state: false,
            };
        };
        let link = |i: &ReplicationInfo| match &i.role {
            Role::Master => None,
            Role::Replica {
                link_up,
                sync_in_progress,
                ..
            } => Some((*link_up, *sync_in_progress)),
        };
        let upstream = a.following() == b.following() && link(a) == link(b);
        Self {
            upstream,
            state: upstream && a.offset == b.offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(link_up: bool, offset: i64) -> ReplicationInfo {
        ReplicationInfo::fixture(
            Role::Replica {
                master: Address::new("10.244.0.10", 6379),
                link_up,
                sync_in_progress: false,
                link_down_seconds: (!link_up).then_some(1),
            },
            offset,
        )
    }

    #[test]
    fn moving_offsets_are_not_a_new_fact() {
        let d = Duration::from_secs(5);
        let zero = Duration::ZERO;
        assert_eq!(
            Fact::of(Some(&replica(true, 100)), zero, d),
            Fact::of(Some(&replica(true, 9_000)), zero, d)
        );
        let master = ReplicationInfo::fixture(Role::Master, 1);
        let busier = ReplicationInfo::fixture(Role::Master, 2);
        assert_eq!(
            Fact::of(Some(&master), zero, d),
            Fact::of(Some(&busier), zero, d)
        );
        let same = |a: &ReplicationInfo, b: &ReplicationInfo| Sameness::of(Some(a), Some(b));
        let moved = same(&replica(true, 1), &replica(true, 2));
        assert!(moved.upstream && !moved.state);
        assert!(same(&replica(true, 1), &replica(true, 1)).state);
        assert!(!same(&replica(true, 1), &replica(false, 1)).upstream);
        assert!(!Sameness::of(None, None).upstream, "no answer is no state");
    }

    #[test]
    fn a_replica_still_for_down_after_and_the_hold_is_a_new_fact_once() {
        let d = Duration::from_secs(1);
        let threshold = d.max(promotion_hold(d));
        let r = replica(true, 100);
        let before = Fact::of(Some(&r), threshold - Duration::from_millis(1), d);
        let after = Fact::of(Some(&r), threshold, d);
        assert_ne!(before, after, "crossed the threshold");
        assert_eq!(after, Fact::of(Some(&r), threshold * 10, d));
        assert_eq!(Fact::of(None, threshold, d), Fact::Unreachable);
    }
}
