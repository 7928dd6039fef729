//! `vigil agent`: PID 1 of every instance pod. Decides the boot role (safety rule 2), writes
//! redis.conf, runs and supervises the Redis server, and serves probes that mean something.

mod boot;
mod fence;
mod probes;
mod restore;
mod supervise;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, info_span};

pub use boot::{Boot, decide_boot};
pub use probes::{Health, liveness, readiness};

use crate::redis_conf::{ConfInput, TlsFiles, UNIX_SOCKET, render};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build a Kubernetes client (in-cluster config): {0}")]
    Client(#[source] kube::Error),
    #[error("cannot read RedisReplication {namespace}/{name} to decide the boot role: {source}")]
    ReadReplication {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Restore(#[from] restore::Error),
    #[error("no Redis server binary found: looked for {0}")]
    NoServerBinary(String),
    #[error("cannot serve probes on {addr}: {source}")]
    ProbeServer {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the agent is told by its pod (environment) and command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub replication: String,
    pub namespace: String,
    pub pod_name: String,
    pub pod_ip: String,
    pub password: Option<String>,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub user_config: PathBuf,
    /// `redis-server` or `valkey-server`; found on PATH when not given.
    pub server_binary: Option<PathBuf>,
    pub probe_port: u16,
    /// How long Redis may take to stop after SIGTERM before it is killed.
    pub stop_timeout: Duration,
    /// How long a stopping master waits for the operator's switchover.
    pub switchover_wait: Duration,
    /// TLS for clients and replication (`spec.tls`), from the mounted Secret.
    pub tls: Option<TlsFiles>,
    /// The object store's keys of a restore (`spec.bootstrap`), from the pod's environment.
    pub restore_keys: Option<crate::backup::store::Keys>,
}

impl Settings {
    /// The unix socket of the agent's own connections to Redis.
    fn socket(&self) -> PathBuf {
        self.run_dir.join(UNIX_SOCKET)
    }
}

/// Runs the instance until Redis exits or the pod is asked to stop; returns the exit code.
pub async fn run(settings: Settings) -> Result<i32, Error> {
    let span = info_span!("agent", pod = %settings.pod_name);
    let _guard = span.enter();
    let client = kube::Client::try_default().await.map_err(Error::Client)?;
    let api: kube::Api<crate::api::RedisReplication> =
        kube::Api::namespaced(client, &settings.namespace);
    let (boot, spec, status) = boot::fetch_boot(&settings, &api).await?;
    info!(?boot, "boot role decided");
    let restored = restore::prepare(&settings, status.as_ref(), spec.persistence).await?;
    let enable_aof = restored == restore::Outcome::Restored { enable_aof: true };

    let user_settings = match std::fs::read_to_string(&settings.user_config) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(Error::Io {
                action: "read",
                path: settings.user_config.clone(),
                source,
            });
        }
    };
    let conf = render(&ConfInput {
        pod_ip: &settings.pod_ip,
        data_dir: &settings.data_dir.to_string_lossy(),
        password: settings.password.as_deref(),
        replica_of: match &boot {
            Boot::ReplicaOf(master) => Some(master),
            Boot::Fenced { .. } => None,
        },
        user_settings: &user_settings,
        min_replicas: spec.min_replicas,
        persistence: if enable_aof {
            crate::api::Persistence::Rdb
        } else {
            spec.persistence
        },
        down_after: spec.known.down_after,
        unix_socket: &settings.socket().to_string_lossy(),
        tls: settings.tls.as_ref(),
    });
    let conf_path = settings.run_dir.join("redis.conf");
    write_private(&conf_path, &conf)?;

    let probe_addr = format!("{}:{}", settings.pod_ip, settings.probe_port);
    let listener = tokio::net::TcpListener::bind(&probe_addr)
        .await
        .map_err(|source| Error::ProbeServer {
            addr: probe_addr.clone(),
            source,
        })?;
    let health = Health::new(settings.socket(), settings.password.clone());
    tokio::spawn(probes::serve(listener, health));
    tokio::spawn(fence::watch(settings.clone(), api, spec.known));
    if enable_aof {
        tokio::spawn({
            let settings = settings.clone();
            async move { restore::enable_aof(&settings).await }
        });
    }

    supervise::run_server(&settings, &conf_path).await
}

/// The config holds the password: readable by the agent's user only.
fn write_private(path: &Path, content: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |action, source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create directory for", e))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("open", e))?;
    file.write_all(content.as_bytes())
        .map_err(|e| io("write", e))
}
