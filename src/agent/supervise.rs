//! Running the Redis server as a child: it dies with the agent, and stops gracefully when the
//! pod is asked to stop.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Duration, Instant};
use tracing::{info, warn};

use super::{Error, Settings};
use crate::redis::InstanceClient;

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

const SERVER_BINARIES: &[&str] = &["valkey-server", "redis-server"];

pub async fn run_server(settings: &Settings, conf: &Path) -> Result<i32, Error> {
    let binary = server_binary(settings)?;
    let mut command = Command::new(&binary);
    command
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // SAFETY: prctl is async-signal-safe; it makes the kernel kill Redis if the agent dies, as a
    // container runtime would when PID 1 exits.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| Error::Io {
        action: "start",
        path: binary.clone(),
        source,
    })?;
    info!(binary = %binary.display(), pid = child.id(), "redis server started");

    let mut term = signal(SignalKind::terminate()).map_err(|source| Error::Io {
        action: "install SIGTERM handler for",
        path: binary.clone(),
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| Error::Io {
        action: "install SIGINT handler for",
        path: binary.clone(),
        source,
    })?;
    tokio::select! {
        status = child.wait() => Ok(exit_code(status, &binary)),
        _ = term.recv() => stop(&mut child, settings, &binary).await,
        _ = int.recv() => stop(&mut child, settings, &binary).await,
    }
}

/// A master with replicas first waits (bounded) for the operator's switchover, which the pod's
/// deletion triggers (safety rule 7); then SIGTERM lets Redis finish (and save, when persistence
/// is on); after the timeout it is killed.
async fn stop(child: &mut Child, settings: &Settings, binary: &Path) -> Result<i32, Error> {
    await_switchover(settings).await;
    info!("stop requested; stopping redis server");
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(settings.stop_timeout, child.wait()).await {
        Ok(status) => Ok(exit_code(status, binary)),
        Err(_) => {
            warn!(timeout = ?settings.stop_timeout, "redis server did not stop in time; killing it");
            let _ = child.kill().await;
            Ok(137)
        }
    }
}

async fn await_switchover(settings: &Settings) {
    let socket = settings.socket();
    let password = settings.password.as_deref();
    let role = || async {
        let mut client = InstanceClient::connect_local(&socket, password, PROBE_TIMEOUT).await?;
        client.replication_info().await
    };
    match role().await {
        Ok(info) if info.is_master() && !info.replicas.is_empty() => {}
        _ => return,
    }
    info!(wait = ?settings.switchover_wait, "master asked to stop; waiting for the switchover");
    let deadline = Instant::now() + settings.switchover_wait;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(info) = role().await
            && !info.is_master()
        {
            info!("switched over; this instance is a replica now");
            return;
        }
    }
    warn!("no switchover within the wait; stopping anyway (the operator fails over)");
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>, binary: &Path) -> i32 {
    match status {
        Ok(s) => {
            info!(binary = %binary.display(), status = %s, "redis server exited");
            s.code().unwrap_or(1)
        }
        Err(e) => {
            warn!(error = %e, "could not wait for redis server");
            1
        }
    }
}

fn server_binary(settings: &Settings) -> Result<PathBuf, Error> {
    if let Some(b) = &settings.server_binary {
        return Ok(b.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    SERVER_BINARIES
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::NoServerBinary(SERVER_BINARIES.join(", ")))
}
