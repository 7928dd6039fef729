//! Safety rule 9: an isolated master fences itself, and the operator promotes a replica of a
//! silent master only once that master must have fenced itself. Both sides read their timing
//! from here, so the argument below holds by construction.
//!
//! The agent of a master with replicas runs a *confirmation round* every [`ROUND_EVERY`]: a
//! heartbeat `PUBLISH` and `WAIT quorum` (Redis asks its replicas for an ack at once); while too
//! few replicas ack, it also reads the `RedisReplication` beside the rounds. The master is
//! *confirmed* at the start of a round in which [`quorum`] replicas acked, or at the start of a
//! read in which the apiserver said it is the master and the operator has not recorded it
//! silent (`status.masterSilentSince`). Unconfirmed for [`fence_after`], it fences itself:
//! read-only, following nobody, clients disconnected. The fence keeps a deadline of its own
//! rather than waiting for a round to end, so a round that hangs does not delay it.
//!
//! Why no two instances ever take writes at once: say the master was last confirmed at `C`.
//! It is fenced at most [`fence_deadline`] after `C` (the tolerance, then the fence: its
//! connection opened if need be, and one command). The operator promotes on silence only when
//! - it recorded the master silent at least [`promotion_hold`] ago: an apiserver confirmation
//!   started before that record, so `C` is earlier than the record; and
//! - all but fewer than a quorum of the replicas have been reachable and unable to ack for at
//!   least [`promotion_hold`] (their offset has not moved although the heartbeat moves it every
//!   round, or they follow someone else): a replica ack means the replica processed the
//!   heartbeat of a round started at `C`, so its offset moved after `C`, and the operator's
//!   first probe showing its final offset came after `C`.
//!
//!   A replica still following the silent master whose offset is no further than the
//!   master's own at its last reply (`R`) has processed no heartbeat of a round started after
//!   that reply was made, so `C` is before `R` for it; the hold then counts from `R`
//!   ([`Stillness::since_reply_of`]), which the operator knows to the millisecond, rather than
//!   from the first probe that showed the replica's final offset, up to an interval later.
//!
//! - and it sent no promotion for at least [`promotion_hold`]: a promotion makes a master
//!   whether its answer arrives or not, and the agent counts a promoted master as confirmed
//!   from its last round before the promotion.
//!
//! Either way the promotion comes after `C + promotion_hold`, which exceeds `C +
//! fence_deadline` by [`SAFETY_MARGIN`]. Both sides measure durations on monotonic clocks.

use std::time::Duration;

use crate::api::Topology;

/// How often the agent of a master starts a confirmation round.
pub const ROUND_EVERY: Duration = Duration::from_millis(100);
/// How long `WAIT` waits for the replicas' acks (milliseconds, as `WAIT` takes them).
pub const REPLICA_ACK_WAIT_MS: u64 = 100;
/// Bound on one command on the agent's local connection (the heartbeat with its `WAIT`, or the
/// fence itself), and on opening one. A unix socket to an instance that answers at all does
/// so in well under a millisecond: this is the `WAIT` plus slack for a loaded node.
pub const LOCAL_COMMAND_TIMEOUT: Duration = Duration::from_millis(150);
/// Above the fence deadline, for scheduling delays on either side.
pub const SAFETY_MARGIN: Duration = Duration::from_millis(250);
/// The fence tolerates losing confirmation for half of `downAfter` (a blip is not an
/// isolation), within these bounds: at least half a second (the half of a 1 s downAfter, so
/// that the hold stays near the silence it follows), below which replicas in their first
/// sync, with an apiserver answering slowly, would fence a healthy master.
const FENCE_AFTER_MIN: Duration = Duration::from_millis(500);
const FENCE_AFTER_MAX: Duration = Duration::from_secs(5);

/// How many replicas must ack for a master to count as confirmed: half of them, rounded up; in a
/// chain only the first replica links to the master, so that one. The operator promotes only
/// when fewer than a quorum can still ack, so a master that keeps a quorum keeps its role, and
/// one that lost it cannot get it back from the other side.
pub fn quorum(replicas: u32, topology: Topology) -> u32 {
    match topology {
        Topology::Star => replicas.div_ceil(2),
        Topology::Chain => replicas.min(1),
    }
}

/// How long the operator has seen an instance unchanged: its whole replication state (role,
/// upstream, link, offset), and its upstream and link alone, both counted from the first
/// answer that showed them (the instance got there earlier). `state_at_most` counts the state's
/// age from the last answer that showed another one instead (the instance got there later):
/// the way a master's silence is counted, from its last reply, and Sentinel's too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stillness {
    pub state: Duration,
    pub upstream: Duration,
    pub state_at_most: Duration,
}

impl Stillness {
    /// Whether a replica seen like this cannot have acked the master at `master` for `hold`:
    /// one that follows it has heard nothing (its offset moves with every heartbeat) for
    /// the hold, one that follows another has done so for the hold.
    ///
    /// A follower must also corroborate the master's silence of `silent` (downAfter, rule 3):
    /// that is measured as the master's own silence is, from the last answer that showed it
    /// hearing something. The certain figure, from the first answer that showed it still, would
    /// add up to a probe interval to every such failover (half of one, on median), which only
    /// rule 9's hold needs.
    pub fn cannot_ack(&self, follows_master: bool, silent: Duration, hold: Duration) -> bool {
        if follows_master {
            self.silent_follower(silent, hold)
        } else {
            self.upstream >= hold
        }
    }

    /// A follower seen still for the hold, and not seen to move for `silent`.
    pub fn silent_follower(&self, silent: Duration, hold: Duration) -> bool {
        self.state >= hold && self.state_at_most >= silent
    }

    /// A replica at `offset` (following the master) seen after the master went silent: when
    /// the master's last reply, `silent_for` ago, held `master_offset` or more, the replica has
    /// heard nothing from the master since that reply, however recently its offset was first
    /// seen (the module's argument).
    pub fn since_reply_of(
        self,
        offset: i64,
        master_offset: Option<i64>,
        silent_for: Option<Duration>,
    ) -> Self {
        match (master_offset, silent_for) {
            (Some(last), Some(silent)) if offset <= last => Self {
                state: self.state.max(silent),
                state_at_most: self.state_at_most.max(silent),
                ..self
            },
            _ => self,
        }
    }
}

/// How long a master may go unconfirmed before it fences itself.
pub fn fence_after(down_after: Duration) -> Duration {
    (down_after / 2).clamp(FENCE_AFTER_MIN, FENCE_AFTER_MAX)
}

/// After its last confirmation, a master is fenced within this: the tolerance, then the
/// fence's connection opened (when the last attempt dropped it) and its one command. Neither
/// the rounds nor the apiserver reads count: a confirmation counts from a round's or a read's
/// start, and the fence does not wait for either to end.
pub fn fence_deadline(down_after: Duration) -> Duration {
    fence_after(down_after) + LOCAL_COMMAND_TIMEOUT * 2
}

/// How long the operator's evidence that a master cannot be confirmed must stand before it
/// promotes a replica of that (silent) master.
pub fn promotion_hold(down_after: Duration) -> Duration {
    fence_deadline(down_after) + SAFETY_MARGIN
}

/// How long a master must have been silent before the operator records it so: the hold then
/// ends at `downAfter` (at once when the hold is the longer; a shorter blip keeps the
/// apiserver's word for the master).
pub fn record_silence_after(down_after: Duration) -> Duration {
    down_after.saturating_sub(promotion_hold(down_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_and_its_complement_never_overlap() {
        assert_eq!(
            quorum(0, Topology::Star),
            0,
            "a master alone needs no confirmation"
        );
        for replicas in 1..10 {
            let q = quorum(replicas, Topology::Star);
            // The operator needs `replicas - q + 1` replicas unable to ack: then at most `q - 1`
            // can, fewer than a quorum.
            let unable = replicas + 1 - q;
            assert!(replicas - unable < q, "{replicas} replicas");
        }
        assert_eq!(quorum(1, Topology::Star), 1);
        let q = |n| quorum(n, Topology::Star);
        assert_eq!(q(2), 1, "one replica isolated does not fence a 3-set");
        assert_eq!(
            q(4),
            2,
            "a master with one replica in a 5-set minority fences"
        );
        assert_eq!(
            quorum(4, Topology::Chain),
            1,
            "only the head of a chain acks"
        );
        assert_eq!(quorum(0, Topology::Chain), 0);
    }

    #[test]
    fn a_follower_must_be_silent_and_another_must_have_moved_away_for_the_hold() {
        let hold = Duration::from_millis(1500);
        let d = Duration::from_secs(5);
        let seen = |state, upstream| Stillness {
            state: Duration::from_millis(state),
            upstream: Duration::from_millis(upstream),
            state_at_most: Duration::from_millis(state),
        };
        assert!(
            !seen(4_000, 60_000).cannot_ack(true, d, hold),
            "downAfter not yet"
        );
        assert!(seen(5_000, 5_000).cannot_ack(true, d, hold));
        // Still since an answer 4.2 s ago, moving at the one a second before it.
        let between = |still: u64, moved: u64| Stillness {
            state_at_most: Duration::from_millis(moved),
            ..seen(still, 60_000)
        };
        assert!(
            between(4_200, 5_200).cannot_ack(true, d, hold),
            "not seen moving for downAfter, seen still for the hold"
        );
        assert!(
            !between(4_200, 4_900).cannot_ack(true, d, hold),
            "seen moving within downAfter"
        );
        assert!(
            !between(1_400, 5_000).cannot_ack(true, d, hold),
            "seen still for less than the hold: it may have acked a round within it"
        );
        assert!(
            !seen(0, 1_000).cannot_ack(false, d, hold),
            "moved away just now"
        );
        assert!(
            seen(0, 1_500).cannot_ack(false, d, hold),
            "its offset may move elsewhere"
        );
    }

    #[test]
    fn a_replica_no_further_than_the_masters_last_reply_has_been_silent_as_long_as_it() {
        let seen = Stillness {
            state: Duration::from_millis(300),
            upstream: Duration::from_secs(60),
            state_at_most: Duration::from_millis(1300),
        };
        let silent = Some(Duration::from_secs(5));
        let heard = |offset, last| seen.since_reply_of(offset, last, silent).state;
        assert_eq!(heard(1000, Some(1000)), Duration::from_secs(5));
        assert_eq!(heard(990, Some(1000)), Duration::from_secs(5));
        assert_eq!(
            heard(1001, Some(1000)),
            Duration::from_millis(300),
            "it processed something the master wrote after its last reply"
        );
        assert_eq!(heard(1000, None), Duration::from_millis(300));
        assert_eq!(
            seen.since_reply_of(1000, Some(1000), None).state,
            Duration::from_millis(300),
            "a master that answers is not silent"
        );
        let long = Stillness {
            state: Duration::from_secs(9),
            ..seen
        };
        assert_eq!(
            long.since_reply_of(1000, Some(1000), silent).state,
            Duration::from_secs(9)
        );
    }

    #[test]
    fn the_hold_covers_the_fence_with_a_margin() {
        for ms in [100, 1_000, 5_000, 30_000, 120_000] {
            let d = Duration::from_millis(ms);
            let after = fence_after(d);
            assert!(after >= FENCE_AFTER_MIN && after <= FENCE_AFTER_MAX);
            assert!(fence_deadline(d) >= after + LOCAL_COMMAND_TIMEOUT * 2);
            assert_eq!(promotion_hold(d), fence_deadline(d) + SAFETY_MARGIN);
        }
    }

    #[test]
    fn the_fence_tolerates_half_of_down_after() {
        assert_eq!(fence_after(Duration::from_secs(1)), FENCE_AFTER_MIN);
        assert!(
            promotion_hold(Duration::from_secs(1)) <= Duration::from_millis(1050),
            "at a 1 s downAfter the hold adds at most about as much again"
        );
        assert_eq!(
            fence_after(Duration::from_secs(5)),
            Duration::from_millis(2500)
        );
        assert_eq!(fence_after(Duration::from_millis(200)), FENCE_AFTER_MIN);
        assert_eq!(fence_after(Duration::from_secs(60)), FENCE_AFTER_MAX);
        // At the default downAfter the hold is shorter than downAfter: it costs no time.
        assert!(promotion_hold(Duration::from_secs(5)) < Duration::from_secs(5));
    }
}
