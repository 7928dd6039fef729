//! The `vigil` binary: `operator`, `agent` and `crd` subcommands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use clap::{Parser, Subcommand};
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
    /// Print the CustomResourceDefinition YAML.
    Crd,
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "VIGIL_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Connect/response timeout for every Redis command the operator sends, in milliseconds.
    #[arg(long, default_value_t = 1000, env = "VIGIL_REDIS_TIMEOUT_MS")]
    redis_timeout_ms: u64,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0:8081", env = "VIGIL_HEALTH_ADDR")]
    health_addr: String,
    /// Name of this operator replica in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME", default_value = "vigil-operator")]
    instance: String,
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
    #[arg(long, env = "VIGIL_STOP_TIMEOUT_SECONDS", default_value_t = 20)]
    stop_timeout_seconds: u64,
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
        Command::Crd => {
            print!("{}", vigil::api::crd_yaml().context("rendering the CRD")?);
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
            };
            let code = vigil::agent::run(settings).await?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
    }
}

async fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("building a Kubernetes client (KUBECONFIG or in-cluster)")?;
    let listener = tokio::net::TcpListener::bind(&args.health_addr)
        .await
        .with_context(|| format!("binding the health endpoint on {}", args.health_addr))?;
    let health = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, health).await {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    });
    tracing::info!(namespace = ?args.namespace, "vigil operator starting");
    vigil::controller::run(
        client,
        vigil::controller::Settings {
            namespace: args.namespace,
            probe_timeout: Duration::from_millis(args.redis_timeout_ms),
            instance: args.instance,
        },
    )
    .await;
    tracing::info!("vigil operator stopped");
    Ok(())
}
