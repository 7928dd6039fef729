//! Safety rule 9 on the agent's side: a master that neither a quorum of its replicas nor the
//! apiserver confirms for a while fences itself. The timing is `crate::isolation`'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Api;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::Settings;
use crate::api::RedisReplication;
use crate::isolation::{
    LOCAL_COMMAND_TIMEOUT, REPLICA_ACK_WAIT_MS, ROUND_EVERY, fence_after, quorum,
};
use crate::redis::{InstanceClient, ReplicationInfo};

/// What the spec says about confirming a master, as last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    /// Replicas the spec asks for (`instances - 1`).
    pub replicas: u32,
    /// How many of them must ack (`crate::isolation::quorum`).
    pub quorum: u32,
    pub down_after: Duration,
    pub failover_enabled: bool,
}

impl Known {
    pub fn of(rr: &RedisReplication) -> Self {
        let replicas = u32::try_from(rr.spec.instances.max(1) - 1).unwrap_or(0);
        Self {
            replicas,
            quorum: quorum(replicas, rr.spec.topology),
            down_after: rr.spec.failover.down_after(),
            failover_enabled: rr.spec.failover.enabled,
        }
    }

    /// A master alone, or one the operator never replaces, has nothing to fence against.
    fn needs_confirmation(&self) -> bool {
        self.quorum > 0 && self.failover_enabled
    }
}

/// Pure: whether the apiserver's copy confirms `pod` as the master: the status names it master
/// and the operator has not recorded it silent, or names it the target of a change in progress.
pub fn apiserver_confirms(rr: &RedisReplication, pod: &str) -> bool {
    let Some(status) = rr.status.as_ref() else {
        return false;
    };
    let target = status.target_master.as_deref();
    if target == Some(pod) {
        return true;
    }
    status.current_master.as_deref() == Some(pod)
        && target.is_none()
        && status.master_silent_since.is_none()
}

/// What the fence goes by, kept up to date by the rounds and the apiserver reader.
#[derive(Clone, Copy, Debug)]
struct Guard {
    /// Start of the last round that confirmed the instance, or found it no master needing
    /// confirmation.
    round: Instant,
    /// Start of the last apiserver read that confirmed it.
    api: Option<Instant>,
    /// The spec as last read.
    known: Known,
    /// The last answer showed a master (one that stops answering stays one here).
    master: bool,
}

impl Guard {
    /// When the instance fences itself unless confirmed again before: `None` when it need not.
    fn due(&self) -> Option<Instant> {
        (self.master && self.known.needs_confirmation())
            .then(|| self.confirmed() + fence_after(self.known.down_after))
    }

    /// When it was last confirmed, by its replicas or by the apiserver.
    fn confirmed(&self) -> Instant {
        self.api.map_or(self.round, |api| api.max(self.round))
    }
}

/// Runs confirmation rounds for as long as the agent runs; the fence itself is due on a
/// deadline of its own ([`fence_when_due`]), so a slow round never delays it.
pub async fn watch(settings: Settings, api: Api<RedisReplication>, known: Known) {
    let (needed_tx, needed) = watch::channel(false);
    let (guard_tx, guard) = watch::channel(Guard {
        round: Instant::now(),
        api: None,
        known,
        master: false,
    });
    let guard_tx = Arc::new(guard_tx);
    // Set while this agent's fence is in place: it turned stale reads off, to turn them back on.
    let fenced = Arc::new(AtomicBool::new(false));
    tokio::spawn(read_while_needed(
        api,
        settings.replication.clone(),
        settings.pod_name.clone(),
        needed,
        guard_tx.clone(),
    ));
    tokio::spawn(fence_when_due(settings.clone(), guard, fenced.clone()));
    let mut rounds = tokio::time::interval(ROUND_EVERY);
    rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut client: Option<InstanceClient> = None;
    loop {
        rounds.tick().await;
        let start = Instant::now();
        let Some(info) = local_info(&settings, &mut client).await else {
            // Redis does not answer: it takes no writes either, and the fence is sent anyway
            // when due.
            continue;
        };
        let Some(local) = client.as_mut() else {
            continue;
        };
        // The operator made the fenced instance a linked replica, or master again.
        let reinstated = info.is_master() || info.is_synced_replica();
        if reinstated && fenced.load(Ordering::Acquire) {
            match local.config_set("replica-serve-stale-data", "yes").await {
                Ok(()) => fenced.store(false, Ordering::Release),
                Err(e) => warn!(error = %e, "cannot turn stale reads back on"),
            }
        }
        let known = guard_tx.borrow().known;
        let confirmed = if !info.is_master() || !known.needs_confirmation() {
            // A replica needs no confirmation; once promoted, it counts from the last round
            // before the promotion, which the operator's hold counts from too.
            true
        } else {
            match local.heartbeat(known.quorum, REPLICA_ACK_WAIT_MS).await {
                Ok(acks) => acks >= i64::from(known.quorum),
                Err(e) => {
                    debug!(error = %e, "heartbeat failed");
                    client = None;
                    false
                }
            }
        };
        needed_tx.send_if_modified(|n| std::mem::replace(n, !confirmed) == confirmed);
        guard_tx.send_if_modified(|g| {
            let due = g.due();
            g.master = info.is_master();
            if confirmed {
                g.round = start;
            }
            g.due() != due
        });
    }
}

/// Fences the instance whenever its confirmation is overdue, on a connection of its own.
async fn fence_when_due(
    settings: Settings,
    mut guard: watch::Receiver<Guard>,
    fenced: Arc<AtomicBool>,
) {
    let mut client: Option<InstanceClient> = None;
    loop {
        let g = *guard.borrow_and_update();
        let due = g.due().filter(|at| *at > Instant::now());
        if due.is_some() || g.due().is_none() {
            let until = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = until => {}
                changed = guard.changed() => if changed.is_err() { return },
            }
            continue;
        }
        warn!(
            unconfirmed = ?g.confirmed().elapsed(),
            replicas = g.known.replicas,
            "isolated master: no quorum of replicas and no apiserver confirmation; fencing itself"
        );
        match fence(&settings, &mut client).await {
            Ok(()) => {
                fenced.store(true, Ordering::Release);
                info!("fenced: read-only, following nobody, clients disconnected");
                // Fenced until the rounds see it so, or it is confirmed again.
                if guard.changed().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot fence; retrying");
                client = None;
                tokio::time::sleep(ROUND_EVERY).await;
            }
        }
    }
}

/// Reads of the `RedisReplication` per fence tolerance while the rounds lack a replica quorum.
/// A read that does not confirm (slow, or answered while the operator briefly recorded the
/// master silent) must not let the fence fall due before another read's start: at two per
/// tolerance, one such read did. Four cost a GET every 125 ms at a 1 s downAfter, only while a
/// quorum of replicas cannot ack.
const READS_PER_TOLERANCE: u32 = 4;

/// Reads the `RedisReplication` while the rounds lack a replica quorum, one started every
/// quarter tolerance whether the last one was answered or not: a confirmation counts from the
/// read's start, so however long a read takes, the fence's deadline does not depend on it
/// (`crate::isolation`), and a slow apiserver delays no later read.
async fn read_while_needed(
    api: Api<RedisReplication>,
    name: String,
    pod: String,
    mut needed: watch::Receiver<bool>,
    guard: Arc<watch::Sender<Guard>>,
) {
    loop {
        if needed.wait_for(|n| *n).await.is_err() {
            return;
        }
        let start = Instant::now();
        let tolerance = fence_after(guard.borrow().known.down_after);
        tokio::spawn(read_once(
            api.clone(),
            name.clone(),
            pod.clone(),
            guard.clone(),
            start,
            tolerance,
        ));
        tokio::time::sleep_until(start + tolerance / READS_PER_TOLERANCE).await;
    }
}

/// One read, started at `start` and bounded by the fence's tolerance; a confirmation counts from
/// its start (answers may arrive out of order: the latest start stands).
async fn read_once(
    api: Api<RedisReplication>,
    name: String,
    pod: String,
    guard: Arc<watch::Sender<Guard>>,
    start: Instant,
    tolerance: Duration,
) {
    let read = tokio::time::timeout(tolerance, api.get(&name)).await;
    if start.elapsed() > tolerance / 2 {
        warn!(took = ?start.elapsed(), "slow read of the RedisReplication");
    }
    match read {
        Ok(Ok(rr)) => guard.send_modify(|g| {
            g.known = Known::of(&rr);
            if apiserver_confirms(&rr, &pod) {
                g.api = Some(g.api.map_or(start, |api| api.max(start)));
            }
        }),
        Ok(Err(e)) => warn!(error = %e, "cannot read the RedisReplication"),
        Err(_) => warn!("the apiserver did not answer within the fence's tolerance"),
    }
}

/// The kept local connection, (re)opened when there is none.
async fn local<'a>(
    settings: &Settings,
    client: &'a mut Option<InstanceClient>,
) -> Result<&'a mut InstanceClient, crate::redis::Error> {
    match client {
        Some(kept) => Ok(kept),
        None => {
            let password = settings.password.as_deref();
            let opened =
                InstanceClient::connect_local(&settings.socket(), password, LOCAL_COMMAND_TIMEOUT)
                    .await?;
            Ok(client.insert(opened))
        }
    }
}

/// `INFO replication` over the kept local connection; a failure drops it.
async fn local_info(
    settings: &Settings,
    client: &mut Option<InstanceClient>,
) -> Option<ReplicationInfo> {
    let info = local(settings, client).await.ok()?.replication_info().await;
    if info.is_err() {
        *client = None;
    }
    info.ok()
}

/// The fence, on the kept connection (opened first if need be): two bounded steps at most.
async fn fence(
    settings: &Settings,
    client: &mut Option<InstanceClient>,
) -> Result<(), crate::redis::Error> {
    local(settings, client).await?.fence().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RedisReplicationStatus;
    use crate::resources::fixtures::replication;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn rr(status: RedisReplicationStatus) -> RedisReplication {
        let mut rr = replication(serde_json::json!({"instances": 3}));
        rr.status = Some(status);
        rr
    }

    fn master(name: &str) -> RedisReplicationStatus {
        RedisReplicationStatus {
            current_master: Some(name.into()),
            ..RedisReplicationStatus::default()
        }
    }

    #[test]
    fn the_apiserver_confirms_only_an_unsuspected_master() {
        assert!(apiserver_confirms(&rr(master("cache-0")), "cache-0"));
        assert!(!apiserver_confirms(&rr(master("cache-1")), "cache-0"));
        let silent = RedisReplicationStatus {
            master_silent_since: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..master("cache-0")
        };
        assert!(
            !apiserver_confirms(&rr(silent), "cache-0"),
            "the operator may be about to promote"
        );
        let moving = RedisReplicationStatus {
            target_master: Some("cache-1".into()),
            ..master("cache-0")
        };
        assert!(!apiserver_confirms(&rr(moving.clone()), "cache-0"));
        assert!(
            apiserver_confirms(&rr(moving), "cache-1"),
            "the target of a change is being promoted"
        );
        let mut none = rr(master("cache-0"));
        none.status = None;
        assert!(!apiserver_confirms(&none, "cache-0"));
    }

    #[test]
    fn the_fence_is_due_a_tolerance_after_the_latest_confirmation_of_a_master() {
        let known = Known::of(&rr(master("cache-0")));
        let after = fence_after(known.down_after);
        let t = Instant::now();
        let guard = Guard {
            round: t,
            api: None,
            known,
            master: true,
        };
        assert_eq!(guard.due(), Some(t + after));
        let read_later = Guard {
            api: Some(t + Duration::from_millis(300)),
            ..guard
        };
        assert_eq!(
            read_later.due(),
            Some(t + Duration::from_millis(300) + after),
            "the apiserver confirmed it later than its replicas"
        );
        let read_earlier = Guard {
            api: Some(t - Duration::from_millis(300)),
            ..guard
        };
        assert_eq!(read_earlier.due(), Some(t + after));
        assert_eq!(
            Guard {
                master: false,
                ..guard
            }
            .due(),
            None,
            "a replica is never fenced"
        );
        let alone = Known { quorum: 0, ..known };
        assert_eq!(
            Guard {
                known: alone,
                ..guard
            }
            .due(),
            None
        );
    }

    /// The reads against a stand-in apiserver that answers one of them only after the whole
    /// tolerance: the master stays confirmed throughout, as the later reads confirm it.
    #[tokio::test(start_paused = true)]
    async fn one_slow_read_of_the_apiserver_does_not_let_the_fence_fall_due() {
        use http::{Request, Response};
        use kube::client::Body;
        let object = rr(master("cache-0"));
        let known = Known::of(&object);
        let tolerance = fence_after(known.down_after);
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let answers = tokio::spawn(async move {
            let body = serde_json::to_vec(&object).expect("json");
            let mut reads = 0;
            while let Some((_, send)) = handle.next_request().await {
                reads += 1;
                let response = Response::new(Body::from(body.clone()));
                let delay = if reads == 2 {
                    tolerance
                } else {
                    Duration::ZERO
                };
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    send.send_response(response);
                });
            }
            reads
        });
        let api = Api::namespaced(kube::Client::new(service, "default"), "default");
        let (_needed_tx, needed) = watch::channel(true);
        let guard = Arc::new(
            watch::channel(Guard {
                round: Instant::now(),
                api: None,
                known,
                master: true,
            })
            .0,
        );
        let reader = tokio::spawn(read_while_needed(
            api,
            "cache".into(),
            "cache-0".into(),
            needed,
            guard.clone(),
        ));
        let end = Instant::now() + tolerance * 4;
        while Instant::now() < end {
            tokio::time::sleep(tolerance / 20).await;
            let due = guard.borrow().due().expect("a master needing confirmation");
            assert!(
                due > Instant::now(),
                "fence due {:?} ago",
                Instant::now() - due
            );
        }
        reader.abort();
        let _ = reader.await;
        let reads = answers.await.expect("stand-in");
        assert!(reads >= 12, "a read every quarter tolerance: {reads}");
    }

    #[test]
    fn a_master_alone_or_without_failover_needs_no_confirmation() {
        let mut r = rr(master("cache-0"));
        r.spec.instances = 1;
        assert!(!Known::of(&r).needs_confirmation());
        r.spec.instances = 3;
        assert_eq!(Known::of(&r).replicas, 2);
        assert!(Known::of(&r).needs_confirmation());
        r.spec.failover.enabled = false;
        assert!(!Known::of(&r).needs_confirmation());
    }
}
