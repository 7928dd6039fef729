//! The Sentinel side's kubelet: one supervisor per `redis-server`, restarting it when it exits
//! with the kubelet's crash back-off, booting it the way vigil's agent boots an instance (never
//! as a writable master on its own). Its start script asks the sentinels who the master is and
//! starts as that master's replica; while they still name the exited instance itself, it waits
//! (polling every 100 ms). Without that, a master restarted empty (no persistence) before
//! Sentinel noticed would be synced from by its replicas and wipe them (Redis docs: "safety of
//! replication when master has persistence turned off").

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::scenario::Instance;
use crate::sentinel::{MASTER_NAME, SENTINEL_PORT, spawn_logged};
use crate::sys::redis_cmd;

/// How long a restarted instance's start script waits for the sentinels to name a master.
const START_SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The kubelet's crash back-off (CrashLoopBackOff: `IsInBackOffSince` and `Next` of client-go's
/// flowcontrol.Backoff, as the kubelet's `doBackOff` uses them), so that vigil's pods and
/// Sentinel's processes come back alike. The first exit is restarted at once and sets a window
/// of 10 s; a later exit waits that window, counted from the exit, and the restart doubles it (to
/// at most 5 min). An exit more than twice that maximum (10 min) after the last restart starts
/// afresh, as a first exit.
#[derive(Default)]
pub struct Backoff {
    /// The last restart and the window the next exit waits.
    last: Option<(Instant, Duration)>,
}

impl Backoff {
    const INITIAL: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(300);

    /// Called as the process exits, at `exited`: how long to wait before restarting it.
    fn next_delay(&mut self, exited: Instant) -> Duration {
        let (wait, window) = match self.last {
            Some((restarted, window)) if exited.duration_since(restarted) <= 2 * Self::MAX => {
                (window, (window * 2).min(Self::MAX))
            }
            _ => (Duration::ZERO, Self::INITIAL),
        };
        self.last = Some((exited + wait, window));
        wait
    }
}

/// Everything a supervisor and the checks need to know about the set.
pub struct Shared {
    pub dir: PathBuf,
    pub password: String,
    pub sentinels: Vec<String>,
    pub redis_server: PathBuf,
}

/// The pid of a running redis-server and when it started.
type Running = Arc<Mutex<Option<(u32, Instant)>>>;

/// One supervised redis-server.
pub struct Supervised {
    running: Running,
    backoff: Arc<Mutex<Backoff>>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    /// Starts `instance` (as `initial_master`'s replica, or as the master) and keeps it running
    /// until `stop` says so.
    pub fn start(
        shared: Arc<Shared>,
        instance: Instance,
        initial_master: Option<String>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let running = Arc::new(Mutex::new(None));
        let backoff = Arc::new(Mutex::new(Backoff::default()));
        let task = tokio::spawn(supervise(
            shared,
            instance,
            initial_master,
            running.clone(),
            backoff.clone(),
            stop,
        ));
        Self {
            running,
            backoff,
            task,
        }
    }

    /// The pid of the instance's redis-server and when it started, if it runs.
    pub fn running(&self) -> Option<(u32, Instant)> {
        *self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the restart history, as a new pod has none: the next exit restarts at once.
    pub fn renew(&self) {
        *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) = Backoff::default();
    }

    /// Waits (bounded) for the supervisor to have stopped its redis-server after `stop`.
    pub async fn stopped(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Aborting drops the supervisor's child, which kills it (kill_on_drop).
        self.task.abort();
    }
}

/// redis.conf of an instance: vigil's defaults (src/redis_conf.rs, `persistence: None`) and the
/// settings it owns, with `replicaof` when it starts as a replica. `bind-source-addr`: its own
/// connections (to its master) leave from its own address, so that a partition's rules, which
/// match addresses, tell the instances apart on `lo`.
fn redis_conf(ip: &str, dir: &Path, password: &str, replica_of: Option<&str>) -> String {
    // vigil's default persistence (RDB, its save points): a gracefully stopped master saves at
    // shutdown and comes back with its data on either side.
    let mut conf = format!(
        "save 3600 1 300 100 60 10000\nappendonly no\nrepl-diskless-sync yes\nrepl-diskless-sync-delay 0\n\
         maxmemory-policy noeviction\nbind {ip}\nbind-source-addr {ip}\nport 6379\n\
         protected-mode no\ndaemonize no\n\
         logfile \"\"\ndir \"{}\"\nreplica-announce-ip {ip}\nreplica-announce-port 6379\n\
         replica-read-only yes\nreplica-serve-stale-data yes\nmin-replicas-to-write 0\n\
         min-replicas-max-lag 10\nrequirepass \"{password}\"\nmasterauth \"{password}\"\n",
        dir.display()
    );
    if let Some(master) = replica_of {
        conf.push_str(&format!("replicaof {master} 6379\n"));
    }
    conf
}

/// The master the sentinels name, when at least two of them name the same one.
async fn named_master(sentinels: &[String]) -> Result<String, String> {
    let answers = futures::future::join_all(sentinels.iter().map(|s| async move {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("get-master-addr-by-name").arg(MASTER_NAME);
        redis_cmd::<Option<Vec<String>>>(s, SENTINEL_PORT, None, &cmd).await
    }))
    .await;
    let named: Vec<String> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok().cloned().flatten())
        .filter_map(|v| v.first().cloned())
        .collect();
    for candidate in &named {
        if named.iter().filter(|n| *n == candidate).count() * 2 > sentinels.len() {
            return Ok(candidate.clone());
        }
    }
    Err(format!("{answers:?}"))
}

/// Supervises one redis-server: starts it, restarts it with back-off when it exits; a restart
/// boots it as a replica of the master the sentinels name (waiting while they name itself).
async fn supervise(
    shared: Arc<Shared>,
    instance: Instance,
    initial_master: Option<String>,
    running: Running,
    backoff: Arc<Mutex<Backoff>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut replica_of = initial_master;
    let dir = shared.dir.join(&instance.name);
    std::fs::create_dir_all(&dir).expect("instance dir");
    let log = dir.join("redis.log");
    let mut restart = false;
    loop {
        if restart {
            // The start script: follow the master the sentinels name, never become one alone.
            let asked = Instant::now();
            replica_of = loop {
                match named_master(&shared.sentinels).await {
                    Ok(m) if m != instance.ip => break Some(m),
                    _ if asked.elapsed() > START_SCRIPT_TIMEOUT => {
                        eprintln!(
                            "sentinel set: {} not restarted: the sentinels named no other master \
                             in {START_SCRIPT_TIMEOUT:?}",
                            instance.name
                        );
                        return;
                    }
                    _ => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.changed() => return,
                }
            };
        }
        restart = true;
        let conf = dir.join("redis.conf");
        std::fs::write(
            &conf,
            redis_conf(&instance.ip, &dir, &shared.password, replica_of.as_deref()),
        )
        .expect("write redis.conf");
        let mut child = spawn_logged(&shared.redis_server, &conf, &log);
        let started = Instant::now();
        *running.lock().unwrap_or_else(|p| p.into_inner()) = child.id().map(|pid| (pid, started));
        tokio::select! {
            _ = child.wait() => {}
            _ = stop.changed() => {
                let _ = child.kill().await;
                return;
            }
        }
        *running.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let delay = backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_delay(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_exit_waits_the_window_from_the_exit_however_long_the_first_restart_ran() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Backoff::default();
        assert_eq!(
            b.next_delay(t0),
            Duration::ZERO,
            "the first exit restarts at once"
        );
        // 30 s of running: the kubelet still waits 10 s from this exit.
        assert_eq!(b.next_delay(t0 + s(30)), s(10));
        // Restarted at 40 s; each restart doubles the window.
        assert_eq!(b.next_delay(t0 + s(45)), s(20));
        // More than 10 min after the last restart (at 65 s): a first exit again.
        assert_eq!(b.next_delay(t0 + s(65 + 601)), Duration::ZERO);
        assert_eq!(b.next_delay(t0 + s(700)), s(10));
    }
}
