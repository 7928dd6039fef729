//! Sentinel-compatible discovery (DESIGN §6): every replica of the operator, leader or not,
//! answers the Sentinel protocol from a watched cache of `RedisReplication` statuses, so clients
//! written for Redis Sentinel find the master, and hear of a new one, with no sentinel pods.
//!
//! `catalog` derives what Sentinel would say from each status, `watch` keeps it current and
//! publishes what `events` says a change means, `peers` finds the other replicas, `commands`
//! (and `sentinel` for `SENTINEL ...`) answers requests, `resp` is the wire format and
//! `server` the connections.

mod catalog;
mod commands;
mod events;
mod glob;
mod peers;
// The executor's tests speak RESP with it too, as stand-in Redis instances.
pub(crate) mod resp;
mod sentinel;
mod server;
mod tls;
mod watch;

pub use tls::{ClientAuth, TlsError, TlsSettings};

use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use kube::Client;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use catalog::Catalog;
use events::Event;

/// Events a subscriber may fall behind by before it is disconnected.
const EVENT_BACKLOG: usize = 1024;

/// Bounds of one request: Sentinel commands are short, so these only stop abuse.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
const MAX_REQUEST_ARGS: usize = 64;

/// Settings of the endpoint.
pub struct Settings {
    /// `host:port` to listen on.
    pub addr: String,
    /// Watch one namespace, or all of them (the operator's scope).
    pub namespace: Option<String>,
    /// Clients must AUTH with this before anything but AUTH, HELLO and QUIT.
    pub password: Option<String>,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Announce this replica to the others (`SENTINEL SENTINELS`); none: serve alone.
    pub announce: Option<Announce>,
    /// Speak TLS only, as Sentinel with `tls-port` (and `port 0`).
    pub tls: Option<TlsSettings>,
}

/// How this replica announces itself to the other replicas of its deployment.
pub struct Announce {
    /// The operator's namespace, where the announcements live.
    pub namespace: String,
    /// The deployment's name (its leader Lease's); replicas of one group list each other.
    pub group: String,
    /// The address peers' clients should dial; default: the listener's, unless a wildcard.
    pub ip: Option<String>,
    pub port: Option<u16>,
    pub lease_duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for Sentinel discovery (change --sentinel-addr): {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve TLS on the Sentinel endpoint (check --sentinel-tls-dir): {0}")]
    Tls(#[from] TlsError),
}

/// State shared by the watch and every connection.
struct Shared {
    catalog: RwLock<Catalog>,
    events: broadcast::Sender<Arc<Event>>,
    password: Option<String>,
    run_id: String,
    /// The other replicas serving the endpoint.
    peers: RwLock<Vec<peers::Peer>>,
}

impl Shared {
    fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    fn catalog_mut(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|p| p.into_inner())
    }

    fn peers(&self) -> RwLockReadGuard<'_, Vec<peers::Peer>> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn peers_mut(&self) -> RwLockWriteGuard<'_, Vec<peers::Peer>> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Listens on `settings.addr`, then serves and watches in the background.
pub async fn start(client: Client, settings: Settings) -> Result<Endpoint, Error> {
    // Bad TLS material stops the start, before anything listens.
    let tls = match settings.tls {
        Some(tls) => Some(Arc::new(tls::Certificates::load(tls, tls::RELOAD_CHECK)?)),
        None => None,
    };
    let bind_error = |source| Error::Bind {
        addr: settings.addr.clone(),
        source,
    };
    let listener = TcpListener::bind(&settings.addr)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    let shared = Arc::new(Shared {
        catalog: RwLock::default(),
        events: broadcast::channel(EVENT_BACKLOG).0,
        password: settings.password,
        run_id: run_id(),
        peers: RwLock::default(),
    });
    let limits = server::Limits {
        max_connections: settings.max_connections.max(1),
        idle_timeout: settings.idle_timeout,
        request: resp::RequestLimits {
            max_bytes: MAX_REQUEST_BYTES,
            max_args: MAX_REQUEST_ARGS,
        },
    };
    let mut withdrawal = None;
    if let Some(announce) = settings.announce {
        match peers::announce_address(local, announce.ip.as_deref(), announce.port) {
            Some(address) => {
                let peer_settings = peers::PeerSettings {
                    namespace: announce.namespace,
                    group: announce.group,
                    announce: address,
                    lease_duration: announce.lease_duration,
                };
                let scope = peers::Scope::of(settings.namespace.as_deref());
                withdrawal = Some(peers::start(
                    client.clone(),
                    peer_settings,
                    scope,
                    shared.clone(),
                ));
            }
            None => tracing::warn!(
                addr = %local,
                "not announcing this Sentinel endpoint to its peers: it listens on a wildcard \
                 address; set --sentinel-announce-ip (the chart sets the pod IP)"
            ),
        }
    }
    tokio::spawn(watch::run(client, settings.namespace, shared.clone()));
    tokio::spawn(server::serve(listener, shared, limits, tls));
    Ok(Endpoint {
        addr: local,
        withdrawal,
    })
}

/// A running endpoint.
pub struct Endpoint {
    /// The address it listens on.
    pub addr: SocketAddr,
    withdrawal: Option<peers::Withdrawal>,
}

impl Endpoint {
    /// Stops announcing this replica to the others (on shutdown); it keeps serving meanwhile.
    pub async fn withdraw(&self) {
        if let Some(withdrawal) = &self.withdrawal {
            withdrawal.run().await;
        }
    }
}

/// A Sentinel run id: 40 hex digits, new for each process.
fn run_id() -> String {
    let mut rng = rand::rng();
    (0..40)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}
