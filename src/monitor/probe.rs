//! The probe of one instance: a connection kept open across probes (reconnected when it
//! fails), `INFO replication` every interval, the answer published, and a wake-up for the
//! replication when its fact changes.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Notify, watch};
use tracing::debug;

use super::fact::Sameness;
use super::{Cadence, Fact, Probe, Settings};
use crate::api::RedisReplication;
use crate::isolation::Stillness;
use crate::metrics::Metrics;
use crate::redis::{Address, Credentials, InstanceClient, ReplicationInfo};

/// A probe is given up on after a quarter of downAfter, at least this and at most the
/// operator's Redis timeout. Silence counts from the last reply whatever the timeout, so a
/// shorter one only tells the planner sooner that a master stopped answering, and records the
/// silence that starts rule 9's hold sooner: at a downAfter of 1 s, a 1 s timeout was most of
/// it. 200 ms is still hundreds of round trips on a cluster network.
const PROBE_TIMEOUT_MIN: Duration = Duration::from_millis(200);
/// The master of a set that can fail over is given up on after an eighth of downAfter, at
/// least this: rule 9's hold counts from the record its first missed probe makes, so this
/// timeout is in every failover of a silent master (125 ms rather than 250 at 1 s). Giving up
/// on a slow master too soon costs little: the record only withdraws the apiserver's word from
/// its agent until it answers again, and its replicas' acks still confirm it.
const MASTER_PROBE_TIMEOUT_MIN: Duration = Duration::from_millis(100);

fn probe_timeout(configured: Duration, cadence: Cadence, master: bool) -> Duration {
    let (share, floor) = if master && cadence.fails_over {
        (cadence.down_after / 8, MASTER_PROBE_TIMEOUT_MIN)
    } else {
        (cadence.down_after / 4, PROBE_TIMEOUT_MIN)
    };
    share.max(floor).min(configured)
}

/// The master of a set that can fail over is probed this many times per downAfter when the
/// probe interval is longer than that: its silence is recorded at the first probe it misses
/// (rule 9's hold counts from there), on average half an interval after it went silent. At a
/// 1 s downAfter that is 125 ms rather than half a second; at 4 s and over, nothing changes.
/// Replicas keep the interval while the master answers, and sets that cannot fail over
/// always: their silence starts nothing ([`Cadence::master_silent`] for a silent master's).
const MASTER_PROBES_PER_DOWN_AFTER: u32 = 4;
/// The operator's own floor on the probe interval.
const PROBE_EVERY_MIN: Duration = Duration::from_millis(50);

fn probe_every(interval: Duration, cadence: Cadence, master: bool) -> Duration {
    if cadence.fails_over && (master || cadence.master_silent) {
        interval.min((cadence.down_after / MASTER_PROBES_PER_DOWN_AFTER).max(PROBE_EVERY_MIN))
    } else {
        interval
    }
}

/// Every probe ticks on one grid (multiples of the interval since the first probe started), so
/// an interval's probes run in one burst: the runtime wakes once per interval for all of them
/// rather than once per instance at scattered instants, which cost more than the probes.
/// Intervals that divide one another share their instants. The first instant after now.
fn next_tick(interval: Duration) -> tokio::time::Instant {
    static GRID: OnceLock<tokio::time::Instant> = OnceLock::new();
    let now = tokio::time::Instant::now();
    let grid = *GRID.get_or_init(|| now);
    let interval = interval.as_nanos().max(1);
    let next = ((now - grid).as_nanos() / interval + 1) * interval;
    grid + Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX))
}

/// What is probed.
pub struct Target {
    pub namespace: String,
    pub replication: String,
    pub pod: String,
    pub address: Address,
    pub credentials: Credentials,
}

pub struct Prober {
    pub target: Target,
    pub settings: Settings,
    pub metrics: Metrics,
    pub owner: ObjectRef<RedisReplication>,
    pub wake: mpsc::UnboundedSender<ObjectRef<RedisReplication>>,
    pub cadence: watch::Receiver<Cadence>,
    /// `None` until the first probe.
    pub latest: watch::Sender<Option<Probe>>,
    pub poke: Arc<Notify>,
}

impl Probe {
    /// The probe asked at `at` and answered (or given up on) at `answered`, after `previous`.
    fn after(
        previous: Option<&Probe>,
        at: Instant,
        answer: Option<ReplicationInfo>,
        answered: Instant,
        down_after: Duration,
    ) -> Self {
        let same = Sameness::of(previous.and_then(|p| p.info.as_ref()), answer.as_ref());
        let (state_since, state_after, upstream_since) = match previous {
            Some(p) => {
                let (state_since, state_after) = match (same.state, &p.info) {
                    (true, _) => (p.state_since, p.state_after),
                    // The previous answer showed another state.
                    (false, Some(_)) => (answered, p.replied_at.unwrap_or(answered)),
                    // No answer before: it may have changed long ago, or just now.
                    (false, None) => (answered, answered),
                };
                let upstream_since = if same.upstream {
                    p.upstream_since
                } else {
                    answered
                };
                (state_since, state_after, upstream_since)
            }
            None => (answered, answered, answered),
        };
        let (replied_at, replied_offset) = match &answer {
            Some(info) => (Some(answered), Some(info.offset)),
            None => previous.map_or((None, None), |p| (p.replied_at, p.replied_offset)),
        };
        let mut next = Self {
            at,
            fact: Fact::Unreachable,
            info: answer,
            state_since,
            state_after,
            upstream_since,
            replied_at,
            replied_offset,
        };
        next.fact = Fact::of(next.info.as_ref(), &next.still_at(answered), down_after);
        next
    }

    /// How long the instance had been seen unchanged at `now`.
    pub fn still_at(&self, now: Instant) -> Stillness {
        Stillness {
            state: now - self.state_since,
            upstream: now - self.upstream_since,
            state_at_most: now - self.state_after,
        }
    }
}

impl Prober {
    /// Probes until the task is aborted (the instance is no longer probed).
    pub async fn run(self) {
        let mut client: Option<InstanceClient> = None;
        // As the last answer showed it: a master that stops answering is probed as one.
        let mut master = false;
        loop {
            // A new instance is asked at once anyway: the reconcile pokes it for a first answer.
            let every = probe_every(self.settings.interval, *self.cadence.borrow(), master);
            let closed = async {
                match client.as_mut() {
                    Some(c) => c.closed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(next_tick(every)) => {}
                () = self.poke.notified() => {}
                // The instance closed the connection (it stopped, or restarts): probe now.
                () = closed => client = None,
            }
            let started = Instant::now();
            let answer = self.probe(&mut client, master).await;
            if let Some(info) = &answer {
                master = info.is_master();
            }
            let t = &self.target;
            self.metrics.probe(
                &t.namespace,
                &t.replication,
                &t.pod,
                started.elapsed(),
                answer.is_some(),
            );
            let down_after = self.cadence.borrow().down_after;
            let answered = Instant::now();
            let mut changed = false;
            self.latest.send_modify(|latest| {
                let next = Probe::after(latest.as_ref(), started, answer, answered, down_after);
                changed = latest.as_ref().is_none_or(|l| l.fact != next.fact);
                *latest = Some(next);
            });
            if changed {
                // The controller is gone only while the operator shuts down.
                let _ = self.wake.unbounded_send(self.owner.clone());
            }
        }
    }

    /// One `INFO replication` on the kept connection, opening it first if needed; a failure
    /// drops the connection so the next probe starts afresh.
    async fn probe(
        &self,
        client: &mut Option<InstanceClient>,
        master: bool,
    ) -> Option<ReplicationInfo> {
        let t = &self.target;
        let timeout = probe_timeout(self.settings.timeout, *self.cadence.borrow(), master);
        if client.is_none() {
            match InstanceClient::connect(&t.pod, &t.address, &t.credentials, timeout).await {
                Ok(c) => *client = Some(c),
                Err(e) => {
                    debug!(instance = %t.pod, error = %e, "instance unreachable");
                    return None;
                }
            }
        }
        let connection = client.as_mut()?;
        let outcome = tokio::time::timeout(timeout, connection.replication_info()).await;
        match outcome {
            Ok(Ok(info)) => Some(info),
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {timeout:?}"),
                };
                debug!(instance = %t.pod, %error, "probe failed; reconnecting next time");
                *client = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_tick_on_one_grid() {
        let interval = Duration::from_millis(1000);
        let a = next_tick(interval);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let b = next_tick(interval);
        let apart = if b > a { b - a } else { a - b };
        assert!(
            apart.as_nanos() % interval.as_nanos() == 0,
            "{apart:?} apart: not on one grid"
        );
        assert!(b > tokio::time::Instant::now());
        let quarter = next_tick(interval / 4);
        assert!(
            (b - quarter)
                .as_nanos()
                .is_multiple_of((interval / 4).as_nanos()),
            "a quarter interval shares the grid"
        );
    }

    #[test]
    fn a_master_that_can_fail_over_is_probed_faster_and_so_are_its_replicas_once_it_is_silent() {
        let ms = Duration::from_millis;
        let cadence = |down_after, fails_over| Cadence {
            down_after: ms(down_after),
            fails_over,
            master_silent: false,
        };
        let every = |down_after, fails_over, master| {
            probe_every(ms(1000), cadence(down_after, fails_over), master)
        };
        let silent = Cadence {
            master_silent: true,
            ..cadence(1000, true)
        };
        assert_eq!(
            probe_every(ms(1000), silent, false),
            ms(250),
            "a replica of a silent master"
        );
        assert_eq!(every(1000, true, true), ms(250));
        assert_eq!(every(1000, true, false), ms(1000), "a replica");
        assert_eq!(
            every(1000, false, true),
            ms(1000),
            "a set that cannot fail over"
        );
        assert_eq!(
            every(5000, true, true),
            ms(1000),
            "the interval is short enough"
        );
        assert_eq!(every(100, true, true), PROBE_EVERY_MIN);
    }

    #[test]
    fn a_probe_waits_a_quarter_of_down_after_and_a_master_an_eighth_within_bounds() {
        let ms = Duration::from_millis;
        let configured = ms(1000);
        let cadence = |down_after, fails_over| Cadence {
            down_after: ms(down_after),
            fails_over,
            master_silent: false,
        };
        let timeout =
            |down_after, master| probe_timeout(configured, cadence(down_after, true), master);
        assert_eq!(timeout(1000, false), ms(250));
        assert_eq!(timeout(5000, false), configured);
        assert_eq!(timeout(400, false), PROBE_TIMEOUT_MIN);
        assert_eq!(timeout(1000, true), ms(125), "the master");
        assert_eq!(timeout(5000, true), ms(625));
        assert_eq!(timeout(400, true), MASTER_PROBE_TIMEOUT_MIN);
        assert_eq!(
            probe_timeout(configured, cadence(1000, false), true),
            ms(250),
            "the master of a set that cannot fail over"
        );
        assert_eq!(
            probe_timeout(ms(100), cadence(5000, true), true),
            ms(100),
            "never longer than the operator's Redis timeout"
        );
    }

    #[test]
    fn a_state_is_dated_between_the_answer_that_showed_it_and_the_one_before() {
        use crate::redis::Role;
        let replica = |offset| {
            let master = Address::new("10.244.0.10", 6379);
            ReplicationInfo::fixture(
                Role::Replica {
                    master,
                    link_up: true,
                    sync_in_progress: false,
                    link_down_seconds: None,
                },
                offset,
            )
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let d = Duration::from_secs(5);
        let probe =
            |previous: Option<&Probe>, s, answer| Probe::after(previous, at(s), answer, at(s), d);
        let first = probe(None, 0, Some(replica(100)));
        let moved = probe(Some(&first), 1, Some(replica(200)));
        assert_eq!((moved.state_since, moved.state_after), (at(1), at(0)));
        let still = probe(Some(&moved), 2, Some(replica(200)));
        assert_eq!(
            (still.state_since, still.state_after),
            (at(1), at(0)),
            "it got to 200 between the answers of 0 s and 1 s"
        );
        let lost = probe(Some(&still), 3, None);
        let back = probe(Some(&lost), 4, Some(replica(200)));
        assert_eq!(
            (back.state_since, back.state_after),
            (at(4), at(4)),
            "after a probe without an answer, nothing dates the state earlier"
        );
        assert_eq!(back.replied_at, Some(at(4)));
        assert_eq!(
            lost.replied_at,
            Some(at(2)),
            "a silence counts from the last reply"
        );
    }
}
