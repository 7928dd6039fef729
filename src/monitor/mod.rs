//! The monitor: one long-lived connection per instance, probed every probe interval
//! (`INFO replication`), the latest answer kept for the planner. It wakes the reconcile of a
//! replication only when a fact the planner acts on changes (see [`Fact`]), so an idle set
//! costs one round trip per instance per interval and nothing on the apiserver.

mod fact;
mod probe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Notify, watch};

pub use fact::Fact;

use crate::api::RedisReplication;
use crate::isolation::Stillness;
use crate::metrics::Metrics;
use crate::redis::{Address, Credentials, ReplicationInfo};
use probe::{Prober, Target};

/// One instance of a replication, as the reconcile asks for it.
#[derive(Clone, Debug)]
pub struct Instance {
    pub pod: String,
    pub address: Address,
    /// An answer older than this is not used (the set was acted on, or the pod says its
    /// process stopped, since).
    pub fresh_after: Option<Instant>,
}

/// How the probes run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub interval: Duration,
    /// Connect and response timeout of a probe.
    pub timeout: Duration,
}

pub struct Monitor {
    settings: Settings,
    metrics: Metrics,
    wake: mpsc::UnboundedSender<ObjectRef<RedisReplication>>,
    probes: Mutex<HashMap<Key, Running>>,
}

/// How a replication's instances are probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    pub down_after: Duration,
    /// It has replicas and failover on: a silent master starts a failover.
    pub fails_over: bool,
    /// The status records the master silent. Rule 9 waits for its replicas to be seen still for
    /// the hold, counted from their first answer after the silence: at the replicas' own
    /// interval that answer came up to an interval late (half of one on median, 0.5 s at the
    /// default 1 s), after the hold itself had run out. So they are asked at once, then at the
    /// master's pace, while the record stands.
    pub master_silent: bool,
}

impl Cadence {
    pub fn of(rr: &RedisReplication) -> Self {
        Self {
            down_after: rr.spec.failover.down_after(),
            fails_over: rr.spec.failover.enabled && rr.spec.instances > 1,
            master_silent: rr
                .status
                .as_ref()
                .is_some_and(|s| s.master_silent_since.is_some()),
        }
    }
}

/// A probed instance: its replication and pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    replication: String,
    pod: String,
}

/// A running probe task, and what it was started with.
struct Running {
    address: Address,
    password: Option<String>,
    tls: bool,
    cadence: watch::Sender<Cadence>,
    latest: watch::Receiver<Option<Probe>>,
    /// Asks for a probe now rather than at the next tick.
    poke: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// One probe's answer.
#[derive(Clone, Debug)]
pub struct Probe {
    /// When it was asked.
    pub at: Instant,
    /// `None`: the instance did not answer.
    pub info: Option<ReplicationInfo>,
    /// When answers first showed this replication state, and this upstream and link
    /// ([`fact::Sameness`]), as the answer arrived: later than the instance reached it.
    pub state_since: Instant,
    pub upstream_since: Instant,
    /// The last answer before `state_since` (that one showed another state), or `state_since`
    /// when the probe before it failed: the instance reached this state after it.
    pub state_after: Instant,
    /// When the instance last answered a probe, this one or an earlier one, and the
    /// replication offset it held then.
    pub replied_at: Option<Instant>,
    pub replied_offset: Option<i64>,
    /// What of it the planner acts on.
    pub fact: Fact,
}

/// An instance's latest answer, for the planner.
#[derive(Clone, Debug)]
pub struct Answer {
    pub info: ReplicationInfo,
    /// How long it has not changed.
    pub still: Stillness,
}

/// What the monitor knows of one instance.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// `None` when it does not answer.
    pub answer: Option<Answer>,
    /// How long since it last answered (`None` while it answers, or when it never did since
    /// probing began): silence counts from the last reply, as Sentinel's down-after does, not
    /// from the first probe that went unanswered.
    pub silent_for: Option<Duration>,
    /// The replication offset of its last reply, when it does not answer now: a replica no
    /// further than this has heard nothing from it since ([`Stillness::since_reply_of`]).
    pub silent_at_offset: Option<i64>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Monitor {
    /// The monitor and the stream of replications whose facts changed (for the controller's
    /// `reconcile_on`).
    pub fn new(
        settings: Settings,
        metrics: Metrics,
    ) -> (Self, mpsc::UnboundedReceiver<ObjectRef<RedisReplication>>) {
        let (wake, wakes) = mpsc::unbounded();
        let monitor = Self {
            settings,
            metrics,
            wake,
            probes: Mutex::default(),
        };
        (monitor, wakes)
    }

    /// Probes exactly `instances` of `rr` from now on (starting, restarting on a new address or
    /// credentials, and stopping probes as needed) and returns the latest answer of each, in
    /// order: `None` when it does not answer. An answer older than the instance's `fresh_after`
    /// or not there yet (a new pod) is asked for now and awaited, bounded by the probe timeout:
    /// a decision never rests on what was true before the last action.
    pub async fn observe(
        &self,
        rr: &RedisReplication,
        instances: &[Instance],
        credentials: &Credentials,
    ) -> Vec<Observed> {
        let cadence = Cadence::of(rr);
        let namespace = rr.namespace().unwrap_or_default();
        let replication = rr.name_any();
        let mut receivers = Vec::with_capacity(instances.len());
        {
            let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
            probes.retain(|k, _| {
                k.namespace != namespace
                    || k.replication != replication
                    || instances.iter().any(|i| i.pod == k.pod)
            });
            for inst in instances {
                let key = Key {
                    namespace: namespace.clone(),
                    replication: replication.clone(),
                    pod: inst.pod.clone(),
                };
                let current = probes.get(&key).is_some_and(|r| {
                    r.address == inst.address
                        && r.password == credentials.password
                        && r.tls == credentials.tls.is_some()
                });
                if !current {
                    let running = self.start(rr, &key, inst, credentials, cadence);
                    probes.insert(key.clone(), running);
                }
                if let Some(running) = probes.get(&key) {
                    let changed = running
                        .cadence
                        .send_if_modified(|c| std::mem::replace(c, cadence) != cadence);
                    if changed && cadence.master_silent {
                        running.poke.notify_one();
                    }
                    receivers.push((
                        running.latest.clone(),
                        running.poke.clone(),
                        inst.fresh_after,
                    ));
                }
            }
        }
        let wait = self.settings.timeout + Duration::from_millis(200);
        let answers = receivers
            .into_iter()
            .map(|(mut latest, poke, after)| async move {
                let fresh = |p: &Option<Probe>| {
                    p.as_ref()
                        .is_some_and(|p| after.is_none_or(|after| p.at >= after))
                };
                if !fresh(&latest.borrow()) {
                    poke.notify_one();
                    let _ = tokio::time::timeout(wait, latest.wait_for(fresh)).await;
                }
                let probe = latest.borrow();
                let answer = probe.as_ref().filter(|_| fresh(&probe)).and_then(|p| {
                    Some(Answer {
                        info: p.info.clone()?,
                        still: p.still_at(Instant::now()),
                    })
                });
                let (silent_for, silent_at_offset) = match (&answer, probe.as_ref()) {
                    (None, Some(p)) => (p.replied_at.map(|at| at.elapsed()), p.replied_offset),
                    _ => (None, None),
                };
                Observed {
                    answer,
                    silent_for,
                    silent_at_offset,
                }
            });
        futures::future::join_all(answers).await
    }

    /// Stops probing the instances of a deleted replication.
    pub fn forget(&self, namespace: &str, replication: &str) {
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| k.namespace != namespace || k.replication != replication);
    }

    fn start(
        &self,
        rr: &RedisReplication,
        key: &Key,
        inst: &Instance,
        credentials: &Credentials,
        cadence: Cadence,
    ) -> Running {
        let (latest_tx, latest) = watch::channel(None);
        let (cadence_tx, cadence_rx) = watch::channel(cadence);
        let poke = Arc::new(Notify::new());
        let prober = Prober {
            target: Target {
                namespace: key.namespace.clone(),
                replication: key.replication.clone(),
                pod: inst.pod.clone(),
                address: inst.address.clone(),
                credentials: credentials.clone(),
            },
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            owner: ObjectRef::from_obj(rr),
            wake: self.wake.clone(),
            cadence: cadence_rx,
            latest: latest_tx,
            poke: poke.clone(),
        };
        Running {
            address: inst.address.clone(),
            password: credentials.password.clone(),
            tls: credentials.tls.is_some(),
            cadence: cadence_tx,
            latest,
            poke,
            task: tokio::spawn(prober.run()),
        }
    }
}
