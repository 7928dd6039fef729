//! Leader election on a `coordination.k8s.io/v1` Lease: several operator replicas may run, only
//! the holder of the Lease acts.
//!
//! The protocol is the one client-go's leaderelection uses, so `kubectl get lease` reads the same:
//! - the holder writes `holderIdentity`, `acquireTime` (when it took the lease),
//!   `renewTime` (every renewal) and `leaseDurationSeconds`; `leaseTransitions` counts changes of
//!   holder;
//! - a candidate may take the lease when nobody holds it, or when the holder's
//!   `renewTime + leaseDurationSeconds` has passed;
//! - every write is a PUT carrying the `resourceVersion` that was read, so when two candidates
//!   race for the same lease the apiserver accepts one write and rejects the other with 409.
//!
//! One difference: expiry is judged from `renewTime` as written by the holder, so the operator
//! replicas' clocks must agree to well within a lease duration (NTP does that); client-go instead
//! times the lease from when the candidate first saw it unchanged, which makes a freshly started
//! candidate wait a full lease duration even when the holder died long ago.
//!
//! The protocol itself (who may take the lease, what is written) is `lease`, pure; the requests
//! that take, renew and release it are `renew`.
//!
//! Why not `kube-lease-manager` (0.13, which supports kube 5): its holder has no local deadline.
//! It renews by awaiting the apiserver's answer and reports the lease lost only when an answer
//! says so; a holder whose renewals hang or fail (an apiserver partition, a stalled request)
//! keeps reporting itself leader past the expiry its standbys judge by, so a standby can take
//! over while the old holder still acts: two operators promoting replicas at once. Here the
//! holder gives up one retry interval before the lease can expire for anyone else
//! (`renew::keep_renewing`), which `tests::apiserver_election_takeover_release_and_loss`
//! checks (step 6: lost before the standby takes over). It also counts time in whole seconds,
//! where this operator renews and retries in milliseconds.

mod lease;
mod renew;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use lease::{Decision, decide};
use renew::{Attempt, AttemptError, give_up, keep_renewing, try_acquire};

/// Where the lease lives, who we are, and the timing.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the operator's own namespace).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// Unique per operator replica (the pod name).
    pub identity: String,
    /// How long a lease stays valid after its last renewal: the longest a standby waits after the
    /// holder died. Whole seconds, as `leaseDurationSeconds` is an integer.
    pub lease_duration: Duration,
    /// How often the holder renews.
    pub renew_interval: Duration,
    /// How often a candidate polls a held lease, and how soon a failed renewal is retried.
    pub retry_interval: Duration,
}

impl LeaseSettings {
    fn validate(&self) -> Result<i32, Error> {
        let invalid = |msg: String| Err(Error::InvalidSettings(msg));
        for (what, value) in [
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("identity", &self.identity),
        ] {
            if value.is_empty() {
                return invalid(format!("the lease {what} is empty"));
            }
        }
        let secs = self.lease_duration.as_secs();
        if secs == 0 || self.lease_duration.subsec_nanos() != 0 {
            return invalid(format!(
                "lease duration {:?} must be a whole number of seconds, at least 1",
                self.lease_duration
            ));
        }
        let Ok(secs) = i32::try_from(secs) else {
            return invalid(format!("lease duration {secs}s is too long"));
        };
        if self.renew_interval.is_zero() || self.retry_interval.is_zero() {
            return invalid("renew and retry intervals must be positive".into());
        }
        // The holder must get at least one renewal in before it gives up, one retry interval
        // before the lease expires (see `keep_renewing`).
        if self.renew_interval + self.retry_interval >= self.lease_duration {
            return invalid(format!(
                "renew interval {:?} + retry interval {:?} must be shorter than the lease duration {:?}",
                self.renew_interval, self.retry_interval, self.lease_duration
            ));
        }
        Ok(secs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid leader election settings: {0}")]
    InvalidSettings(String),
    #[error(
        "not allowed to {verb} Lease {namespace}/{name}: grant get, create and update on \
         leases.coordination.k8s.io in namespace {namespace} to the operator's ServiceAccount \
         (the chart's leader-election Role grants get and update on the Lease named after the \
         release only): {source}"
    )]
    Forbidden {
        verb: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "cannot create Lease {namespace}/{name}: namespace {namespace} does not exist; create it \
         or point the leader election at the operator's namespace: {source}"
    )]
    NamespaceMissing {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// The lease is held by this identity; it is renewed in the background until it is lost,
/// released, or this value is dropped (then it simply expires).
pub struct Leadership {
    settings: LeaseSettings,
    api: Api<Lease>,
    lost: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    renewer: JoinHandle<Option<Held>>,
}

/// The lease as last written by us, and when that write was sent.
pub(super) struct Held {
    lease: Lease,
    renewed_at: Instant,
}

impl Leadership {
    /// Waits until this identity holds the lease (creating it if absent, taking it over when the
    /// holder's renewTime + leaseDurationSeconds has passed, using the resourceVersion for
    /// optimistic concurrency so two candidates never both win), then keeps renewing it in a
    /// background task.
    pub async fn acquire(client: kube::Client, settings: LeaseSettings) -> Result<Self, Error> {
        let duration_secs = settings.validate()?;
        let api = Api::<Lease>::namespaced(client, &settings.namespace);
        let mut last_seen_holder: Option<String> = None;
        let held = loop {
            match try_acquire(&api, &settings, duration_secs).await {
                Ok(Attempt::Acquired(held)) => break *held,
                Ok(Attempt::Held { holder, expires }) => {
                    // Log each holder once, not every poll.
                    if last_seen_holder.as_deref() != Some(holder.as_str()) {
                        info!(
                            lease = %settings.name, %holder, %expires,
                            "lease held by another operator replica; standing by"
                        );
                        last_seen_holder = Some(holder);
                    }
                }
                Ok(Attempt::Raced) => {
                    debug!(lease = %settings.name, "another candidate wrote the lease first")
                }
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Transient(e)) => {
                    warn!(lease = %settings.name, error = %e, "reading or writing the lease failed; retrying")
                }
            }
            tokio::time::sleep(settings.retry_interval).await;
        };
        let spec = held.lease.spec.clone().unwrap_or_default();
        info!(
            lease = %settings.name,
            namespace = %settings.namespace,
            identity = %settings.identity,
            transitions = spec.lease_transitions.unwrap_or(0),
            "acquired the lease; this replica is the leader"
        );
        let (lost_tx, lost) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel();
        let renewer = tokio::spawn(keep_renewing(
            api.clone(),
            settings.clone(),
            duration_secs,
            held,
            lost_tx,
            stop_rx,
        ));
        Ok(Self {
            settings,
            api,
            lost,
            stop,
            renewer,
        })
    }

    /// Resolves when leadership is lost: a renewal did not succeed before the lease would expire,
    /// or another identity holds it. The caller then stops acting (the operator exits, so it
    /// restarts as a follower). Cancel-safe; resolves at once when already lost.
    pub async fn lost(&mut self) {
        // An error means the renewal task ended without a word (it panicked): nobody renews, so
        // the lease is as good as lost.
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Gives the lease up promptly on clean shutdown (sets holderIdentity to None / renewTime to
    /// now with leaseDurationSeconds 1, with optimistic concurrency) so a standby takes over at
    /// once.
    pub async fn release(self) {
        let Self {
            settings,
            api,
            stop,
            renewer,
            ..
        } = self;
        // Stop renewing first so a renewal cannot overwrite the release.
        let _ = stop.send(());
        let held = match renewer.await {
            Ok(Some(held)) => held,
            Ok(None) => {
                info!(lease = %settings.name, "leadership was already lost; nothing to release");
                return;
            }
            Err(e) => {
                warn!(lease = %settings.name, error = %e, "lease renewal task failed; not releasing, the lease will expire");
                return;
            }
        };
        // Past the lease's expiry a release gains nothing: standbys may take it anyway.
        let valid_until = held.renewed_at + settings.lease_duration;
        match tokio::time::timeout_at(valid_until, give_up(&api, &settings, held.lease)).await {
            Ok(()) => {}
            Err(_) => {
                warn!(lease = %settings.name, "releasing the lease timed out; it expires on its own")
            }
        }
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("settings", &self.settings)
            .field("lost", &*self.lost.borrow())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::PostParams;

    /// Against a real apiserver (KUBECONFIG or in-cluster), e.g. the local control plane:
    /// `unshare --net -- bash -c 'ip link set lo up; VIGIL_SKIP_TOOLS=1 tests/controlplane/up.sh
    /// /tmp/leader-cp && . /tmp/leader-cp/env && cargo test -p vigil --lib leader::tests::apiserver
    /// -- --ignored --nocapture; tests/controlplane/down.sh /tmp/leader-cp --purge'`
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs an apiserver"]
    async fn apiserver_election_takeover_release_and_loss() {
        use std::time::Instant as StdInstant;

        let _ = tracing_subscriber::fmt()
            .with_env_filter(format!(
                "{}=debug",
                module_path!().trim_end_matches("::tests")
            ))
            .with_test_writer()
            .try_init();
        let client = kube::Client::try_default().await.expect("a kube client");
        let name = format!(
            "vigil-leader-test-{}",
            Timestamp::now().as_millisecond() % 1_000_000
        );
        let ns = "default";
        let api = Api::<Lease>::namespaced(client.clone(), ns);
        let settings = |identity: &str| LeaseSettings {
            namespace: ns.into(),
            name: name.clone(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(4),
            renew_interval: Duration::from_secs(1),
            retry_interval: Duration::from_millis(500),
        };
        let lease_duration = Duration::from_secs(4);
        let retry = Duration::from_millis(500);
        let spec_of = |lease: Lease| lease.spec.expect("lease spec");

        // 1. Three candidates race for a lease that does not exist: exactly one wins, the others
        //    keep waiting while the winner renews.
        let mut candidates: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|id| {
                let (client, s) = (client.clone(), settings(id));
                tokio::spawn(async move { (id, Leadership::acquire(client, s).await) })
            })
            .collect();
        let (winner, leader) = {
            let (first, _, rest) = futures::future::select_all(candidates).await;
            candidates = rest;
            let (id, leadership) = first.expect("candidate task");
            (id, leadership.expect("acquire"))
        };
        tokio::time::sleep(lease_duration * 2).await;
        assert!(
            candidates.iter().all(|c| !c.is_finished()),
            "a second candidate acquired the lease held by {winner}"
        );
        let s = spec_of(api.get(&name).await.expect("get lease"));
        assert_eq!(s.holder_identity.as_deref(), Some(winner));
        assert_eq!(s.lease_transitions, Some(0));
        let first_acquired = s.acquire_time.clone().expect("acquireTime");
        assert!(
            s.renew_time.clone().expect("renewTime") > first_acquired,
            "renewed since"
        );
        assert_eq!(s.lease_duration_seconds, Some(4));
        println!(
            "1. {winner} won; the other two still wait after {:?}",
            lease_duration * 2
        );

        // 2. The leader stops renewing without releasing: one of the others takes over within
        //    about lease_duration + retry_interval.
        let last_renewal = spec_of(api.get(&name).await.expect("get lease"))
            .renew_time
            .expect("renewTime");
        drop(leader);
        let dropped = StdInstant::now();
        let (second, leader2) = {
            let (first, _, rest) = futures::future::select_all(candidates).await;
            candidates = rest;
            let (id, leadership) = first.expect("candidate task");
            (id, leadership.expect("acquire"))
        };
        let takeover = dropped.elapsed();
        let since_renewal = Timestamp::now()
            .duration_since(last_renewal.0)
            .as_secs_f64();
        println!(
            "2. {second} took over {takeover:?} after {winner} stopped renewing, {since_renewal:.3}s after its last renewTime"
        );
        assert!(
            takeover <= lease_duration + retry + Duration::from_secs(1),
            "{takeover:?}"
        );
        let s = spec_of(api.get(&name).await.expect("get lease"));
        assert_eq!(s.holder_identity.as_deref(), Some(second));
        assert_eq!(s.lease_transitions, Some(1));
        assert!(s.acquire_time.expect("acquireTime") > first_acquired);

        // 3. release() hands over at once: the remaining candidate gets it within a poll.
        let third_task = candidates.pop().expect("one candidate left");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third_task.is_finished());
        let released_at = StdInstant::now();
        leader2.release().await;
        let (third, mut leader3) = {
            let (id, leadership) = third_task.await.expect("candidate task");
            (id, leadership.expect("acquire"))
        };
        let handover = released_at.elapsed();
        println!("3. {third} acquired {handover:?} after {second} released");
        assert!(handover <= retry + Duration::from_secs(1), "{handover:?}");
        let s = spec_of(api.get(&name).await.expect("get lease"));
        assert_eq!(s.holder_identity.as_deref(), Some(third));
        assert_eq!(s.lease_transitions, Some(2));

        // 4. Someone else writes the lease: the holder notices at its next renewal.
        let mut stolen = api.get(&name).await.expect("get lease");
        if let Some(s) = stolen.spec.as_mut() {
            s.holder_identity = Some("intruder".into());
            s.renew_time = Some(MicroTime(Timestamp::now()));
        }
        api.replace(&name, &PostParams::default(), &stolen)
            .await
            .expect("overwrite lease");
        let stolen_at = StdInstant::now();
        tokio::time::timeout(Duration::from_secs(3), leader3.lost())
            .await
            .expect("loss noticed");
        println!(
            "4. {third} noticed the loss after {:?}",
            stolen_at.elapsed()
        );
        // `lost` stays resolved.
        tokio::time::timeout(Duration::from_millis(10), leader3.lost())
            .await
            .expect("still lost");
        leader3.release().await;
        let s = spec_of(api.get(&name).await.expect("get lease"));
        assert_eq!(
            s.holder_identity.as_deref(),
            Some("intruder"),
            "release must not touch a lease we lost"
        );

        // 5. A deleted lease is a loss too; "d" first waits out the intruder's lease.
        let mut leader4 = Leadership::acquire(client.clone(), settings("d"))
            .await
            .expect("acquire after the intruder's lease expired");
        api.delete(&name, &Default::default())
            .await
            .expect("delete lease");
        tokio::time::timeout(Duration::from_secs(3), leader4.lost())
            .await
            .expect("loss noticed after deletion");
        println!("5. deletion of the lease noticed as a loss");

        // 6. The holder is cut off from the apiserver: it reports the loss before a standby can
        //    take over. Its client goes through a TCP relay we then shut.
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let relay_addr = relay.local_addr().expect("relay address");
        let mut config = kube::Config::infer().await.expect("kube config");
        let upstream = format!(
            "{}:{}",
            config.cluster_url.host().expect("apiserver host"),
            config.cluster_url.port_u16().unwrap_or(443)
        );
        config.cluster_url = format!("https://{relay_addr}").parse().expect("relay url");
        let relayed = kube::Client::try_from(config).expect("relayed client");
        let relay_task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut down, _)) = relay.accept().await {
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        let mut cut_off = Leadership::acquire(relayed, settings("e"))
            .await
            .expect("acquire via relay");
        let standby = tokio::spawn(Leadership::acquire(client.clone(), settings("f")));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let last_renewal = spec_of(api.get(&name).await.expect("get lease"))
            .renew_time
            .expect("renewTime");
        // Aborting the task drops the listener and every relayed connection.
        relay_task.abort();
        let cut = StdInstant::now();
        tokio::time::timeout(lease_duration, cut_off.lost())
            .await
            .expect("loss noticed while cut off");
        let lost_after = cut.elapsed();
        let lost_at = Timestamp::now();
        let standby = standby
            .await
            .expect("standby task")
            .expect("standby acquires");
        let taken_at = Timestamp::now();
        println!(
            "6. cut off: lost {lost_after:?} after the cut, {:.3}s after its last renewTime; the standby took over {:.3}s later",
            lost_at.duration_since(last_renewal.0).as_secs_f64(),
            taken_at.duration_since(lost_at).as_secs_f64()
        );
        assert!(lost_at < taken_at);
        assert!(
            taken_at.duration_since(lost_at)
                >= (retry - Duration::from_millis(100))
                    .try_into()
                    .expect("small")
        );
        cut_off.release().await;
        standby.release().await;
        let s = spec_of(api.get(&name).await.expect("get lease"));
        assert_eq!(s.holder_identity, None, "released");
        api.delete(&name, &Default::default())
            .await
            .expect("delete lease");
    }
}
