//! The other operator replicas serving the endpoint, for `SENTINEL SENTINELS` (clients such as
//! ioredis and go-redis add the Sentinels listed there to the ones they try).
//!
//! Real Sentinels find each other through hello messages on the masters they monitor; operator
//! replicas have no such channel, so each announces itself in a Lease of its own in the
//! operator's namespace (its address, and the namespace it watches), renews it, and watches the
//! Leases of its group. A replica that stops renewing drops out of the list once its Lease
//! expires, and is deleted by the others a while later.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use super::Shared;
use super::events::{self, Event};
use crate::labels::{SENTINEL_ADDRESS_ANNOTATION, SENTINEL_GROUP_LABEL, SENTINEL_SCOPE_ANNOTATION};
use crate::redis::Address;

/// An expired announcement is deleted once it is this many lease durations old.
const FORGET_AFTER_DURATIONS: u32 = 4;

/// Where and how this replica announces itself.
#[derive(Clone, Debug)]
pub struct PeerSettings {
    /// The operator's namespace, where the Leases live.
    pub namespace: String,
    /// The group's name (the leader Lease's name, shared by the replicas of one deployment).
    pub group: String,
    /// The address clients reach this replica's endpoint at.
    pub announce: Address,
    pub lease_duration: Duration,
}

/// The masters a replica answers for: those of its watched namespace, or of every namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    pub fn of(namespace: Option<&str>) -> Self {
        namespace.map_or(Self::All, |ns| Self::Namespace(ns.to_string()))
    }

    fn annotation(&self) -> &str {
        match self {
            Self::All => "",
            Self::Namespace(ns) => ns,
        }
    }

    fn parse(annotation: &str) -> Self {
        match annotation {
            "" => Self::All,
            ns => Self::Namespace(ns.to_string()),
        }
    }
}

/// Another replica serving the endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    pub run_id: String,
    pub address: Address,
    pub scope: Scope,
    /// When it last renewed its announcement.
    pub renewed: Instant,
}

impl Peer {
    /// It answers for the masters of `namespace`.
    pub fn serves(&self, namespace: &str) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Namespace(ns) => ns == namespace,
        }
    }
}

/// What an announcement Lease says, if it is another replica's and still renewed.
enum Announcement {
    Live(Peer),
    Expired { for_long: bool },
    Invalid,
}

/// Reads `lease` at wall-clock `now` (monotonic `now_i`).
fn read(lease: &Lease, run_id: &str, now: Timestamp, now_i: Instant) -> Option<Announcement> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref()?;
    if holder == run_id {
        return None;
    }
    let annotations = lease.annotations();
    let (Some(address), Some(MicroTime(renewed)), Some(seconds)) = (
        annotations
            .get(SENTINEL_ADDRESS_ANNOTATION)
            .and_then(|a| Address::parse(a)),
        spec.renew_time.as_ref(),
        spec.lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok()),
    ) else {
        return Some(Announcement::Invalid);
    };
    let duration = Duration::from_secs(seconds);
    let age = Duration::try_from(now.duration_since(*renewed)).unwrap_or(Duration::ZERO);
    if age >= duration {
        return Some(Announcement::Expired {
            for_long: age >= duration * FORGET_AFTER_DURATIONS,
        });
    }
    Some(Announcement::Live(Peer {
        run_id: holder.to_string(),
        address,
        scope: Scope::parse(
            annotations
                .get(SENTINEL_SCOPE_ANNOTATION)
                .map_or("", String::as_str),
        ),
        renewed: now_i.checked_sub(age).unwrap_or(now_i),
    }))
}

/// This replica's announcement, renewed at `now`.
fn announcement(settings: &PeerSettings, scope: &Scope, run_id: &str, now: Timestamp) -> Lease {
    let seconds = i32::try_from(settings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(&settings.group, run_id)),
            namespace: Some(settings.namespace.clone()),
            labels: Some(BTreeMap::from([(
                SENTINEL_GROUP_LABEL.to_string(),
                settings.group.clone(),
            )])),
            annotations: Some(BTreeMap::from([
                (
                    SENTINEL_ADDRESS_ANNOTATION.to_string(),
                    settings.announce.to_string(),
                ),
                (
                    SENTINEL_SCOPE_ANNOTATION.to_string(),
                    scope.annotation().to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(run_id.to_string()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// One Lease per process: a restarted replica is a new Sentinel, as a restarted Sentinel with a
/// new run id would be.
fn lease_name(group: &str, run_id: &str) -> String {
    format!("{group}-sentinel-{}", &run_id[..run_id.len().min(16)])
}

/// The address to announce for a listener on `bound`: `ip` when given, else the bound address
/// unless it is a wildcard (which no client can dial).
pub fn announce_address(bound: SocketAddr, ip: Option<&str>, port: Option<u16>) -> Option<Address> {
    let port = port.unwrap_or(bound.port());
    match ip {
        Some(ip) if !ip.is_empty() => Some(Address::new(ip, port)),
        _ if bound.ip().is_unspecified() => None,
        _ => Some(Address::new(bound.ip().to_string(), port)),
    }
}

/// How long a stopping replica waits for its announcement to be deleted.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(2);

/// Takes this replica's announcement back when it stops, so its peers stop listing it at once
/// rather than when the Lease expires.
pub struct Withdrawal {
    api: Api<Lease>,
    name: String,
    withdrawn: Arc<AtomicBool>,
}

impl Withdrawal {
    pub async fn run(&self) {
        // The renewals stop first, so none recreates the Lease afterwards.
        self.withdrawn.store(true, Ordering::SeqCst);
        let deleted = tokio::time::timeout(
            WITHDRAW_TIMEOUT,
            self.api.delete(&self.name, &DeleteParams::default()),
        )
        .await;
        match deleted {
            Ok(Ok(_)) | Ok(Err(kube::Error::Api(_))) => {
                info!(lease = %self.name, "withdrew this Sentinel endpoint's announcement");
            }
            Ok(Err(e)) => {
                warn!(lease = %self.name, error = %e, "withdrawing this Sentinel endpoint's announcement failed; it expires by itself")
            }
            Err(_) => {
                warn!(lease = %self.name, "withdrawing this Sentinel endpoint's announcement timed out; it expires by itself")
            }
        }
    }
}

/// Starts announcing this replica and keeping `shared`'s peer list current, until the process
/// stops; the handle withdraws the announcement.
pub fn start(
    client: Client,
    settings: PeerSettings,
    scope: Scope,
    shared: Arc<Shared>,
) -> Withdrawal {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let name = lease_name(&settings.group, &shared.run_id);
    info!(lease = %name, address = %settings.announce, "announcing this Sentinel endpoint to its peers");
    let withdrawn = Arc::new(AtomicBool::new(false));
    let renew_every = (settings.lease_duration / 3).max(Duration::from_millis(200));
    tokio::spawn(renew(
        api.clone(),
        settings.clone(),
        scope,
        shared.run_id.clone(),
        renew_every,
        withdrawn.clone(),
    ));
    tokio::spawn(watch(api.clone(), settings, shared, renew_every));
    Withdrawal {
        api,
        name,
        withdrawn,
    }
}

/// Keeps `shared`'s peer list current from the group's announcements.
async fn watch(
    api: Api<Lease>,
    settings: PeerSettings,
    shared: Arc<Shared>,
    renew_every: Duration,
) {
    let selector = format!("{SENTINEL_GROUP_LABEL}={}", settings.group);
    let stream =
        watcher(api.clone(), watcher::Config::default().labels(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut leases: BTreeMap<String, Lease> = BTreeMap::new();
    // Names seen since the watch (re)started listing, to forget what was deleted meanwhile.
    let mut listing: Option<BTreeSet<String>> = None;
    // Expiry is a matter of time, not of events: re-read the list on every renewal tick too.
    let mut tick = tokio::time::interval(renew_every);
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(watcher::Event::Init)) => listing = Some(BTreeSet::new()),
                Some(Ok(watcher::Event::InitApply(lease))) => {
                    if let Some(seen) = &mut listing {
                        seen.insert(lease.name_any());
                    }
                    leases.insert(lease.name_any(), lease);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(seen) = listing.take() {
                        leases.retain(|name, _| seen.contains(name));
                    }
                }
                Some(Ok(watcher::Event::Apply(lease))) => {
                    leases.insert(lease.name_any(), lease);
                }
                // A withdrawn announcement (or one a peer deleted as long expired).
                Some(Ok(watcher::Event::Delete(lease))) => {
                    leases.remove(&lease.name_any());
                }
                Some(Err(e)) => warn!(error = %e, "watching Sentinel peer announcements failed; retrying"),
                None => return,
            },
            _ = tick.tick() => {}
        }
        let (now, now_i) = (Timestamp::now(), Instant::now());
        let mut peers = Vec::new();
        for (lease_name, lease) in &leases {
            match read(lease, &shared.run_id, now, now_i) {
                Some(Announcement::Live(peer)) => peers.push(peer),
                Some(Announcement::Expired { for_long: true }) => {
                    debug!(lease = %lease_name, "deleting a long expired Sentinel peer announcement");
                    let _ = api.delete(lease_name, &DeleteParams::default()).await;
                }
                Some(Announcement::Expired { .. } | Announcement::Invalid) | None => {}
            }
        }
        leases.retain(|_, l| {
            !matches!(
                read(l, &shared.run_id, now, now_i),
                Some(Announcement::Expired { for_long: true })
            )
        });
        peers.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        let arrived: Vec<Event> = {
            let known = shared.peers();
            let catalog = shared.catalog();
            let masters = catalog.masters();
            peers
                .iter()
                .filter(|p| known.iter().all(|k| k.run_id != p.run_id))
                .flat_map(|p| events::new_sentinel(p, &masters))
                .collect()
        };
        *shared.peers_mut() = peers;
        for event in arrived {
            // No subscriber is not an error.
            let _ = shared.events.send(Arc::new(event));
        }
    }
}

/// Creates the announcement, then renews it; recreates it when it is gone (deleted by a peer
/// that took this replica for dead after a long pause).
async fn renew(
    api: Api<Lease>,
    settings: PeerSettings,
    scope: Scope,
    run_id: String,
    every: Duration,
    withdrawn: Arc<AtomicBool>,
) {
    let name = lease_name(&settings.group, &run_id);
    let mut exists = false;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if withdrawn.load(Ordering::SeqCst) {
            return;
        }
        let now = Timestamp::now();
        let result = if exists {
            let patch = serde_json::json!({"spec": {"renewTime": MicroTime(now)}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        } else {
            api.create(
                &PostParams::default(),
                &announcement(&settings, &scope, &run_id, now),
            )
            .await
            .map(|_| ())
        };
        match result {
            Ok(()) => exists = true,
            Err(kube::Error::Api(s)) if s.code == 404 => exists = false,
            Err(kube::Error::Api(s)) if s.code == 409 && !exists => exists = true,
            Err(e) => {
                warn!(lease = %name, error = %e, "renewing this Sentinel endpoint's announcement failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PeerSettings {
        PeerSettings {
            namespace: "vigil-system".into(),
            group: "vigil".into(),
            announce: Address::new("10.0.0.9", 26379),
            lease_duration: Duration::from_secs(15),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
    }

    #[test]
    fn an_announcement_reads_back_as_a_peer_until_it_expires() {
        let scope = Scope::Namespace("apps".into());
        let lease = announcement(&settings(), &scope, &"f".repeat(40), at(0));
        assert_eq!(lease.name_any(), "vigil-sentinel-ffffffffffffffff");
        let now = Instant::now();
        assert!(
            read(&lease, &"f".repeat(40), at(1), now).is_none(),
            "not itself"
        );
        let Some(Announcement::Live(peer)) = read(&lease, "other", at(5), now) else {
            panic!("a live peer")
        };
        assert_eq!(peer.address, Address::new("10.0.0.9", 26379));
        assert_eq!(peer.run_id, "f".repeat(40));
        assert!(peer.serves("apps") && !peer.serves("other"));
        assert_eq!(now.duration_since(peer.renewed), Duration::from_secs(5));
        assert!(matches!(
            read(&lease, "other", at(15), now),
            Some(Announcement::Expired { for_long: false })
        ));
        assert!(matches!(
            read(&lease, "other", at(60), now),
            Some(Announcement::Expired { for_long: true })
        ));
        let everywhere = announcement(&settings(), &Scope::All, "x", at(0));
        let Some(Announcement::Live(peer)) = read(&everywhere, "other", at(1), now) else {
            panic!("a live peer")
        };
        assert!(peer.serves("anything"));
    }

    #[test]
    fn the_announced_address_is_never_a_wildcard() {
        let any: SocketAddr = "0.0.0.0:26379".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        assert_eq!(announce_address(any, None, None), None);
        assert_eq!(
            announce_address(any, Some("10.1.2.3"), None),
            Some(Address::new("10.1.2.3", 26379))
        );
        assert_eq!(
            announce_address(local, None, Some(30000)),
            Some(Address::new("127.0.0.1", 30000))
        );
    }
}
