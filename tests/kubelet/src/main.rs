//! vigil-testkubelet: a process-based kubelet stand-in for the local control plane tests.
//!
//! It registers one Node with a real kube-apiserver, binds every pod to it, and runs each pod's
//! containers as plain local processes: own loopback address (127.0.0.N), volumes materialised
//! on disk and bind-mounted in a private mount namespace, env and service-account token as a
//! kubelet provides them, probes, restarts, status and graceful deletion. Tests can crash,
//! freeze or resume a container through its pid file (see `layout`).
//!
//! Deliberately not a kubelet: no images (commands come from `--bin-dir`), no cgroups or
//! resource limits, no PID/network isolation, no `kubectl logs/exec/port-forward` (read the log
//! files instead), no ClusterIP routing (KUBERNETES_SERVICE_HOST is the apiserver itself).

mod action;
mod command;
mod container;
mod context;
mod env;
mod expand;
mod fieldpath;
mod ipam;
mod layout;
mod manager;
mod node;
mod objects;
mod probe;
mod process;
mod quantity;
mod scheduler;
mod status;
mod volumes;
mod worker;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::signal::unix::{SignalKind, signal};

use crate::context::Context;
use crate::ipam::Ipam;
use crate::layout::Layout;
use crate::manager::Manager;
use crate::node::NodeSpec;

/// Runs a Kubernetes node whose pods are local processes.
#[derive(Debug, Parser)]
#[command(name = "vigil-testkubelet", version)]
struct Args {
    /// Kubeconfig with rights to manage nodes, leases, pods and to request SA tokens.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, default_value = "vigil-node")]
    node_name: String,
    /// Where pod files live (pid, ip, logs, volumes) and PVC data persists.
    #[arg(long)]
    state_dir: PathBuf,
    /// Directory searched first (by basename) for container commands; repeatable.
    #[arg(long = "bin-dir", required = true)]
    bin_dirs: Vec<PathBuf>,
    /// The apiserver's address as containers should reach it (KUBERNETES_SERVICE_HOST).
    #[arg(long, default_value = "127.0.0.1")]
    apiserver_host: String,
    /// The apiserver's port (KUBERNETES_SERVICE_PORT).
    #[arg(long, default_value_t = 6443)]
    apiserver_port: u16,
    /// The pod network, a /24; each pod's address is added to `lo` (run inside a private network
    /// namespace: the apiserver refuses 127/8 addresses in EndpointSlices).
    #[arg(long, default_value = "10.244.0.0/24")]
    pod_network: String,
    /// First host number of the pod addresses.
    #[arg(long, default_value_t = 10)]
    ip_range_start: u8,
    /// Seconds containers get between SIGTERM and SIGKILL when the stand-in itself stops.
    #[arg(long, default_value_t = 3)]
    shutdown_grace_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .init();
    let args = Args::parse();

    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", args.kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading kubeconfig")?;
    let client = Client::try_from(config).context("building client")?;

    let layout = Layout::new(args.state_dir.clone());
    std::fs::create_dir_all(layout.pods_root()).context("creating state dir")?;
    kill_leftovers(&layout);

    let version = wait_for_apiserver(&client).await;
    let node = NodeSpec::new(&args.node_name, "127.0.0.1", &version);
    while let Err(e) = node::heartbeat(&client, &node).await {
        tracing::warn!(error = %e, "registering node failed; retrying");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tracing::info!(node = %args.node_name, version, "node registered");

    let minor = version
        .trim_start_matches('v')
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    let ctx = Arc::new(Context {
        client: client.clone(),
        node_name: args.node_name.clone(),
        layout,
        bin_dirs: args
            .bin_dirs
            .iter()
            .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()))
            .collect(),
        search_path: std::env::var("PATH").unwrap_or_default(),
        apiserver_host: args.apiserver_host.clone(),
        apiserver_port: args.apiserver_port,
        host_ip: "127.0.0.1".into(),
        node_allocatable: node.capacity.clone(),
        probe_user_agent: format!("kube-probe/{minor}"),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        ipam: Mutex::new(Ipam::new(
            ipam::parse_network(&args.pod_network).map_err(anyhow::Error::msg)?,
            args.ip_range_start,
        )),
    });

    let heartbeat = tokio::spawn(node::heartbeat_loop(client, node));
    let manager = Manager::new(ctx, node::labels(&args.node_name));
    manager.run(shutdown_signal()?).await;
    heartbeat.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The apiserver's version (the node reports it as its kubelet version, so version-skew checks
/// pass); waits while the apiserver is not up yet.
async fn wait_for_apiserver(client: &Client) -> String {
    loop {
        match client.apiserver_version().await {
            Ok(info) => return info.git_version,
            Err(e) => {
                tracing::warn!(error = %e, "apiserver not reachable yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Kills container processes a previous, SIGKILLed run of the stand-in left behind (their
/// leaders died with it, but children may linger in the process groups).
fn kill_leftovers(layout: &Layout) {
    for pid_file in layout.all_pid_files() {
        let pgid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pgid) = pgid {
            let killed = process::kill_stale_group(pgid);
            if killed > 0 {
                tracing::info!(pgid, killed, "killed leftover processes of a previous run");
            }
        }
        layout::remove_file(&pid_file);
    }
}

/// Completes on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
