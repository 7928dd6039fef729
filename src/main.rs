//! The `vigil` binary: `operator`, `agent` and `crd` subcommands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use clap::{Parser, Subcommand};
use vigil::leader::{Leadership, LeaseSettings};
use vigil::metrics::Metrics;
use vigil::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Redis/Valkey replication operator that does Sentinel's job itself"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "VIGIL_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Operator(OperatorArgs),
    /// Run one Redis instance (the entrypoint of the server image).
    Agent(AgentArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file each into a directory.
    Crd {
        /// Write `<dir>/<crd name>.yaml` per CRD instead of printing them all.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "VIGIL_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Connect/response timeout for every Redis command the operator sends, in milliseconds.
    #[arg(long, default_value_t = 1000, env = "VIGIL_REDIS_TIMEOUT_MS")]
    redis_timeout_ms: u64,
    /// How often every instance is probed (PING/INFO replication), in milliseconds.
    #[arg(long, default_value_t = 1000, env = "VIGIL_PROBE_INTERVAL_MS")]
    probe_interval_ms: u64,
    /// Least time between two failovers of one replication, in seconds (rate limit).
    #[arg(long, default_value_t = 30, env = "VIGIL_FAILOVER_COOLDOWN_SECONDS")]
    failover_cooldown_seconds: u64,
    /// Reconciles running at once, over all replications (0: no bound). Each takes a few
    /// apiserver round trips; the bound keeps a burst of new sets from opening a connection
    /// per request.
    #[arg(long, default_value_t = 32, env = "VIGIL_CONCURRENT_RECONCILES")]
    concurrent_reconciles: u16,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0:8081", env = "VIGIL_HEALTH_ADDR")]
    health_addr: String,
    /// Name of this operator replica in Events and the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME", default_value = "vigil-operator")]
    instance: String,
    /// Act only while holding the Lease, so several replicas can run for high availability.
    #[arg(long, env = "VIGIL_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// The operator's own namespace in a cluster: where its Lease is, and what replications'
    /// NetworkPolicies admit as the operator.
    #[arg(long, env = "POD_NAMESPACE", default_value = "vigil-system")]
    leader_election_namespace: String,
    /// Name of the Lease; the chart's RBAC allows the release's full name.
    #[arg(long, env = "VIGIL_LEASE_NAME", default_value = "vigil")]
    lease_name: String,
    /// A standby takes over this long after the leader stops renewing.
    #[arg(long, env = "VIGIL_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    #[arg(long, env = "VIGIL_LEASE_RENEW_INTERVAL_MS", default_value_t = 2000)]
    lease_renew_interval_ms: u64,
    #[arg(long, env = "VIGIL_LEASE_RETRY_INTERVAL_MS", default_value_t = 1000)]
    lease_retry_interval_ms: u64,
    /// Address of the Sentinel-compatible discovery endpoint, served by every replica.
    #[arg(long, default_value = "0.0.0.0:26379", env = "VIGIL_SENTINEL_ADDR")]
    sentinel_addr: String,
    /// File holding the password Sentinel clients must AUTH with (default: no password).
    #[arg(
        long,
        env = "VIGIL_SENTINEL_PASSWORD_FILE",
        conflicts_with = "sentinel_password"
    )]
    sentinel_password_file: Option<PathBuf>,
    /// The password Sentinel clients must AUTH with; --sentinel-password-file keeps it out of
    /// the process's arguments and environment.
    #[arg(long, env = "VIGIL_SENTINEL_PASSWORD", hide_env_values = true)]
    sentinel_password: Option<String>,
    /// Seconds a Sentinel connection may stay silent before it is closed (subscribers never
    /// are).
    #[arg(
        long,
        env = "VIGIL_SENTINEL_IDLE_TIMEOUT_SECONDS",
        default_value_t = 300
    )]
    sentinel_idle_timeout_seconds: u64,
    /// Sentinel connections served at once; more are refused.
    #[arg(long, env = "VIGIL_SENTINEL_MAX_CONNECTIONS", default_value_t = 1024)]
    sentinel_max_connections: usize,
    /// Announce this replica's Sentinel endpoint to the other replicas (a Lease of its own in
    /// --leader-election-namespace), which list it in `SENTINEL SENTINELS`, as it lists them.
    #[arg(long, env = "VIGIL_SENTINEL_ANNOUNCE", default_value_t = true, action = clap::ArgAction::Set)]
    sentinel_announce: bool,
    /// The IP other replicas' clients reach this endpoint at (the chart sets the pod IP);
    /// default: the --sentinel-addr host, unless it is a wildcard.
    #[arg(long, env = "VIGIL_SENTINEL_ANNOUNCE_IP")]
    sentinel_announce_ip: Option<String>,
    /// Directory of a TLS Secret's files (tls.crt, tls.key; ca.crt to verify clients): the
    /// Sentinel endpoint then speaks TLS only, as Sentinel's `tls-port` (default: plain TCP).
    #[arg(long, env = "VIGIL_SENTINEL_TLS_DIR")]
    sentinel_tls_dir: Option<PathBuf>,
    /// With TLS, whether clients must present a certificate signed by ca.crt (Sentinel's
    /// `tls-auth-clients`, whose default is yes).
    #[arg(
        long,
        env = "VIGIL_SENTINEL_TLS_AUTH_CLIENTS",
        value_enum,
        default_value = "yes"
    )]
    sentinel_tls_auth_clients: vigil::discovery::ClientAuth,
    /// Serve the Sentinel endpoint (and health) only: never act on any replication, nor take
    /// part in leader election. For more discovery capacity than the acting deployment has.
    #[arg(long, env = "VIGIL_SENTINEL_ONLY", default_value_t = false, action = clap::ArgAction::Set)]
    sentinel_only: bool,
    /// The port to announce (default: the one listened on), e.g. behind a NodePort.
    #[arg(long, env = "VIGIL_SENTINEL_ANNOUNCE_PORT")]
    sentinel_announce_port: Option<u16>,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The RedisReplication this instance belongs to.
    #[arg(long, env = "VIGIL_REPLICATION")]
    replication: String,
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    #[arg(long, env = "POD_NAME")]
    pod_name: String,
    #[arg(long, env = "POD_IP")]
    pod_ip: String,
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    #[arg(long, env = "VIGIL_DATA_DIR", default_value = "/data")]
    data_dir: PathBuf,
    #[arg(long, env = "VIGIL_RUN_DIR", default_value = "/run/vigil")]
    run_dir: PathBuf,
    /// The user's redis.conf settings (from the ConfigMap).
    #[arg(
        long,
        env = "VIGIL_USER_CONFIG",
        default_value = "/etc/vigil/user.conf"
    )]
    user_config: PathBuf,
    /// redis-server or valkey-server binary (default: found on PATH).
    #[arg(long, env = "VIGIL_SERVER_BINARY")]
    server_binary: Option<PathBuf>,
    #[arg(long, env = "VIGIL_PROBE_PORT", default_value_t = vigil::resources::AGENT_PORT)]
    probe_port: u16,
    /// Seconds Redis may take to stop before it is killed.
    #[arg(long, env = "VIGIL_STOP_TIMEOUT_SECONDS", default_value_t = 10)]
    stop_timeout_seconds: u64,
    /// Seconds a stopping master waits for the operator's switchover before it stops anyway.
    #[arg(long, env = "VIGIL_SWITCHOVER_WAIT_SECONDS", default_value_t = 10)]
    switchover_wait_seconds: u64,
    /// Directory of the TLS Secret's files (tls.crt, tls.key, ca.crt): serve TLS only and
    /// replicate over TLS (default: plain TCP).
    #[arg(long, env = "VIGIL_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// With TLS, clients must present a certificate signed by the CA.
    #[arg(long, env = "VIGIL_TLS_AUTH_CLIENTS", default_value_t = false, action = clap::ArgAction::Set)]
    tls_auth_clients: bool,
    /// The object store's access key id of a restore (`spec.bootstrap`).
    #[arg(long, env = "VIGIL_RESTORE_ACCESS_KEY_ID", hide_env_values = true)]
    restore_access_key_id: Option<String>,
    #[arg(long, env = "VIGIL_RESTORE_SECRET_ACCESS_KEY", hide_env_values = true)]
    restore_secret_access_key: Option<String>,
    /// PEM CA certificates of the restore's object store.
    #[arg(long, env = "VIGIL_RESTORE_CA", hide_env_values = true)]
    restore_ca: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("vigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Crd { dir } => {
            for crd in vigil::api::crds() {
                let name = crd.metadata.name.clone().unwrap_or_default();
                let yaml = vigil::api::crd_yaml_of(crd).context("rendering the CRDs")?;
                match &dir {
                    None => print!("{yaml}"),
                    Some(dir) => {
                        let path = dir.join(format!("{name}.yaml"));
                        std::fs::write(&path, yaml)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                }
            }
            Ok(0)
        }
        Command::Operator(args) => operator(args).await.map(|()| 0),
        Command::Agent(args) => {
            let settings = vigil::agent::Settings {
                replication: args.replication,
                namespace: args.namespace,
                pod_name: args.pod_name,
                pod_ip: args.pod_ip,
                password: args.password.filter(|p| !p.is_empty()),
                data_dir: args.data_dir,
                run_dir: args.run_dir,
                user_config: args.user_config,
                server_binary: args.server_binary,
                probe_port: args.probe_port,
                stop_timeout: Duration::from_secs(args.stop_timeout_seconds),
                switchover_wait: Duration::from_secs(args.switchover_wait_seconds),
                tls: args.tls_dir.map(|dir| vigil::redis_conf::TlsFiles {
                    dir,
                    auth_clients: args.tls_auth_clients,
                }),
                restore_keys: match (args.restore_access_key_id, args.restore_secret_access_key) {
                    (Some(access_key_id), Some(secret_access_key)) => {
                        Some(vigil::backup::store::Keys {
                            access_key_id,
                            secret_access_key,
                            ca: args.restore_ca.map(String::into_bytes),
                        })
                    }
                    _ => None,
                },
            };
            let code = vigil::agent::run(settings).await.inspect_err(|e| {
                // The kubelet shows why the instance stopped in the pod's status, where the
                // operator reads it (a failed restore's reason, ...).
                let log = std::path::Path::new("/dev/termination-log");
                if log.exists() {
                    let _ = std::fs::write(log, e.to_string());
                }
            })?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
    }
}

async fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("building a Kubernetes client (KUBECONFIG or in-cluster)")?;
    let metrics = Metrics::new();
    serve_health(&args.health_addr, metrics.clone()).await?;
    let sentinel = vigil::discovery::start(
        client.clone(),
        vigil::discovery::Settings {
            addr: args.sentinel_addr.clone(),
            namespace: args.namespace.clone(),
            password: sentinel_password(&args)?,
            idle_timeout: Duration::from_secs(args.sentinel_idle_timeout_seconds),
            max_connections: args.sentinel_max_connections,
            announce: args.sentinel_announce.then(|| vigil::discovery::Announce {
                namespace: args.leader_election_namespace.clone(),
                group: args.lease_name.clone(),
                ip: args.sentinel_announce_ip.clone(),
                port: args.sentinel_announce_port,
                // Twice the leader's (renewed every third of it, 10 s by default): a dead peer
                // stays listed up to 30 s (clients then try the next Sentinel), for few requests.
                lease_duration: Duration::from_secs(args.lease_duration_seconds.saturating_mul(2)),
            }),
            tls: args
                .sentinel_tls_dir
                .clone()
                .map(|dir| vigil::discovery::TlsSettings {
                    dir,
                    client_auth: args.sentinel_tls_auth_clients,
                }),
        },
    )
    .await?;
    tracing::info!(addr = %sentinel.addr, "Sentinel discovery endpoint listening");
    let result = act(args, client, metrics).await;
    // A stopping replica leaves its peers' `SENTINEL SENTINELS` now, not when its Lease expires.
    sentinel.withdraw().await;
    result
}

/// Everything after discovery: the leader Lease and the controller (or nothing, with
/// --sentinel-only), until a shutdown signal.
async fn act(args: OperatorArgs, client: kube::Client, metrics: Metrics) -> anyhow::Result<()> {
    if args.sentinel_only {
        tracing::info!("serving Sentinel discovery only (--sentinel-only)");
        shutdown_signal().await;
        return Ok(());
    }

    // Every replica serves health, metrics and discovery; only the Lease holder acts.
    let leadership = if args.leader_election {
        let settings = LeaseSettings {
            namespace: args.leader_election_namespace.clone(),
            name: args.lease_name.clone(),
            // Unique per process, so two local runs never share an identity.
            identity: format!("{}-{}", args.instance, std::process::id()),
            lease_duration: Duration::from_secs(args.lease_duration_seconds),
            renew_interval: Duration::from_millis(args.lease_renew_interval_ms),
            retry_interval: Duration::from_millis(args.lease_retry_interval_ms),
        };
        tracing::info!(lease = %settings.name, namespace = %settings.namespace, "waiting for leadership");
        tokio::select! {
            leadership = Leadership::acquire(client.clone(), settings) => {
                Some(leadership.context("acquiring the leader Lease")?)
            }
            _ = shutdown_signal() => return Ok(()),
        }
    } else {
        None
    };

    tracing::info!(namespace = ?args.namespace, "vigil operator starting");
    let controller = vigil::controller::run(
        client,
        vigil::controller::Settings {
            namespace: args.namespace,
            probe_timeout: Duration::from_millis(args.redis_timeout_ms),
            probe_interval: Duration::from_millis(args.probe_interval_ms.max(50)),
            failover_cooldown: Duration::from_secs(args.failover_cooldown_seconds),
            concurrent_reconciles: args.concurrent_reconciles,
            instance: args.instance,
            operator_namespace: args.leader_election_namespace.clone(),
            metrics,
        },
    );
    match leadership {
        Some(mut leadership) => {
            tokio::select! {
                () = controller => leadership.release().await,
                () = leadership.lost() => anyhow::bail!("lost the leader Lease; exiting so a standby acts alone"),
            }
        }
        None => controller.await,
    }
    tracing::info!("vigil operator stopped");
    Ok(())
}

/// The Sentinel password from its file (trailing newline dropped) or its flag; none if unset.
fn sentinel_password(args: &OperatorArgs) -> anyhow::Result<Option<String>> {
    let Some(path) = &args.sentinel_password_file else {
        return Ok(args.sentinel_password.clone().filter(|p| !p.is_empty()));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the Sentinel password from {}", path.display()))?;
    let password = text.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(
        !password.is_empty(),
        "the Sentinel password file {} is empty; put the password in it or drop \
         --sentinel-password-file",
        path.display()
    );
    Ok(Some(password.to_string()))
}

async fn serve_health(addr: &str, metrics: Metrics) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the health endpoint on {addr}"))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        vigil::metrics::CONTENT_TYPE,
                    )],
                    metrics.encode(),
                )
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    });
    Ok(())
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
