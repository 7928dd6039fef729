//! What of a probe the planner acts on. The monitor wakes a replication's reconcile only when
//! one of these facts changes, not when an offset merely moves.

use std::time::Duration;

use crate::isolation::{Stillness, promotion_hold};
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
        /// Seen unchanged for the promotion hold, and not seen to change for `downAfter`: it
        /// has heard nothing from a master whose heartbeat moves its offset (rules 3 and 9,
        /// [`Stillness::silent_follower`]).
        still: bool,
    },
}

impl Fact {
    /// `still`: how long the instance's replication state has been the same.
    pub fn of(info: Option<&ReplicationInfo>, still: &Stillness, down_after: Duration) -> Self {
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
                still: still.silent_follower(down_after, promotion_hold(down_after)),
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

    /// Seen unchanged since an answer `still` ago, moving at the one before, `interval` earlier.
    fn seen(still: Duration, interval: Duration) -> Stillness {
        Stillness {
            state: still,
            upstream: still,
            state_at_most: still + interval,
        }
    }

    #[test]
    fn moving_offsets_are_not_a_new_fact() {
        let d = Duration::from_secs(5);
        let zero = &seen(Duration::ZERO, Duration::ZERO);
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
        let ms = Duration::from_millis;
        let r = replica(true, 100);
        let d = ms(1000);
        let hold = promotion_hold(d);
        let interval = ms(1000);
        let before = Fact::of(Some(&r), &seen(hold - ms(1), interval), d);
        let after = Fact::of(Some(&r), &seen(hold, interval), d);
        assert_ne!(before, after, "crossed the hold");
        assert_eq!(after, Fact::of(Some(&r), &seen(hold * 10, interval), d));
        assert_eq!(Fact::of(None, &seen(hold, interval), d), Fact::Unreachable);
        // At 5 s the hold is shorter: downAfter is crossed when the replica was last seen
        // moving that long ago, though first seen still an interval later.
        let d = ms(5000);
        assert!(promotion_hold(d) < d - interval);
        let before = Fact::of(Some(&r), &seen(d - interval - ms(1), interval), d);
        let after = Fact::of(Some(&r), &seen(d - interval, interval), d);
        assert_ne!(before, after, "crossed downAfter");
    }
}
