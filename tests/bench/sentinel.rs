//! The reference: real Redis Sentinel. Three `redis-server` (a master and two replicas) and three
//! `redis-sentinel` (quorum 2) as plain processes inside the benchmark's network namespace, each
//! on an address of its own added to `lo`, configured like vigil's instances (same redis.conf
//! defaults, auth on the instances, none on the Sentinel endpoints). The instances are kept
//! running by supervisors (supervisor.rs), as the kubelet keeps vigil's pods running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::watch;

use crate::scenario::{Instance, System};
use crate::supervisor::{Shared, Supervised};
use crate::support::partition::Cut;
use crate::support::wait_for;
use crate::sys::{redis_cmd, replication, rule};

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "bench";
pub const SENTINEL_PORT: u16 = 26379;
/// Sentinel's failover-timeout: also its election timeout (min(10 s, this)) and how long it
/// waits before reconfiguring a replica of a wrong master. Sentinel's default is 180 s.
pub const FAILOVER_TIMEOUT_MS: u64 = 10_000;
/// Replicas reconfigured at once after a promotion: all of them, as vigil rewires all at once.
pub const PARALLEL_SYNCS: u32 = 2;

pub struct SentinelSet {
    shared: Arc<Shared>,
    instances: Vec<Instance>,
    supervised: Vec<Supervised>,
    sentinel_procs: Vec<tokio::process::Child>,
    stop: watch::Sender<bool>,
}

pub fn binary(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| name.into())
}

/// Adds `ip/32` to `lo` (we run as root in our own network namespace).
pub fn add_address(ip: &str) {
    let out = std::process::Command::new("ip")
        .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
        .output()
        .expect("run ip");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        // iproute2 says so in one of two ways, by version.
        out.status.success()
            || stderr.contains("File exists")
            || stderr.contains("already assigned"),
        "ip addr add {ip}/32 dev lo: {stderr}"
    );
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Starts `bin` (redis-server, redis-sentinel) with its config file, output to `log`, killed
/// when dropped.
pub fn spawn_logged(bin: &Path, conf: &Path, log: &Path) -> tokio::process::Child {
    Command::new(bin)
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(log_file(log))
        .stderr(log_file(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
}

/// sentinel.conf of a sentinel; `bind-source-addr`: its connections leave from its own address.
fn sentinel_conf(ip: &str, dir: &Path, master_ip: &str, password: &str, down_after: u64) -> String {
    format!(
        "bind {ip}\nbind-source-addr {ip}\nport {SENTINEL_PORT}\nprotected-mode no\n\
         daemonize no\nlogfile \"\"\ndir \"{}\"\nsentinel announce-ip {ip}\n\
         sentinel monitor {MASTER_NAME} {master_ip} 6379 2\n\
         sentinel auth-pass {MASTER_NAME} {password}\n\
         sentinel down-after-milliseconds {MASTER_NAME} {down_after}\n\
         sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
         sentinel parallel-syncs {MASTER_NAME} {PARALLEL_SYNCS}\n",
        dir.display()
    )
}

impl SentinelSet {
    /// Starts the set on `10.245.<net>.1-3` (instances) and `10.245.<net>.11-13` (sentinels),
    /// its files under `dir`, and waits until the sentinels watch a master with two replicas and
    /// know each other.
    pub async fn start(net: u8, dir: PathBuf, down_after: u64) -> Self {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sentinel set dir");
        let instances: Vec<Instance> = (1..=3)
            .map(|n| Instance {
                name: format!("redis-{n}"),
                ip: format!("10.245.{net}.{n}"),
            })
            .collect();
        let sentinels: Vec<String> = (11..=13).map(|n| format!("10.245.{net}.{n}")).collect();
        for ip in instances.iter().map(|i| &i.ip).chain(&sentinels) {
            add_address(ip);
        }
        let password: String = {
            use rand::Rng;
            rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(32)
                .map(char::from)
                .collect()
        };
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            password,
            sentinels: sentinels.clone(),
            redis_server: binary("REDIS_SERVER", "redis-server"),
        });
        let (stop, stop_rx) = watch::channel(false);
        let master_ip = instances[0].ip.clone();
        let supervised = instances
            .iter()
            .enumerate()
            .map(|(n, instance)| {
                Supervised::start(
                    shared.clone(),
                    instance.clone(),
                    (n > 0).then(|| master_ip.clone()),
                    stop_rx.clone(),
                )
            })
            .collect();
        let sentinel_bin = binary("REDIS_SENTINEL", "redis-sentinel");
        let sentinel_procs = sentinels
            .iter()
            .enumerate()
            .map(|(n, ip)| {
                let sdir = dir.join(format!("sentinel-{}", n + 1));
                std::fs::create_dir_all(&sdir).expect("sentinel dir");
                let conf = sdir.join("sentinel.conf");
                std::fs::write(
                    &conf,
                    sentinel_conf(ip, &sdir, &master_ip, &shared.password, down_after),
                )
                .expect("write sentinel.conf");
                let log = sdir.join("sentinel.log");
                spawn_logged(&sentinel_bin, &conf, &log)
            })
            .collect();
        let set = Self {
            shared,
            instances,
            supervised,
            sentinel_procs,
            stop,
        };
        set.wait_stable().await;
        set
    }

    /// Stops every process of the set.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for s in &mut self.supervised {
            s.stopped().await;
        }
        for child in &mut self.sentinel_procs {
            let _ = child.kill().await;
        }
    }

    /// Signals the redis-server our supervisor runs for `instance`.
    fn signal(&self, instance: &Instance, signal: i32) {
        let (pid, _) = self
            .running(instance)
            .unwrap_or_else(|| panic!("{} is not running", instance.name));
        // SAFETY: kill(2) on the redis-server our supervisor started.
        let rc = unsafe { libc::kill(pid as i32, signal) };
        assert_eq!(rc, 0, "signal {signal} to {} (pid {pid})", instance.name);
    }

    /// The pid of the instance's redis-server and when it started, if it runs.
    fn running(&self, instance: &Instance) -> Option<(u32, Instant)> {
        self.supervisor(instance)?.running()
    }

    fn supervisor(&self, instance: &Instance) -> Option<&Supervised> {
        let n = self.instances.iter().position(|i| i.ip == instance.ip)?;
        self.supervised.get(n)
    }

    /// `CONFIG SET replica-priority` on an instance (a restart goes back to the default, 100).
    async fn set_priority(&self, instance: &Instance, priority: u32) {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg("replica-priority").arg(priority);
        redis_cmd::<String>(&instance.ip, 6379, Some(&self.shared.password), &cmd)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CONFIG SET replica-priority {priority} on {}: {e}",
                    instance.name
                )
            });
    }

    /// Fields of `SENTINEL <sub> bench` on one sentinel, flat key/value pairs per entry.
    async fn sentinel_entries(
        sentinel: &str,
        sub: &str,
    ) -> Result<Vec<std::collections::HashMap<String, String>>, String> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg(sub).arg(MASTER_NAME);
        let pairs = |flat: Vec<String>| {
            flat.chunks(2)
                .filter_map(|p| match p {
                    [k, v] => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect()
        };
        if sub == "master" {
            let flat: Vec<String> = redis_cmd(sentinel, SENTINEL_PORT, None, &cmd).await?;
            Ok(vec![pairs(flat)])
        } else {
            let entries: Vec<Vec<String>> = redis_cmd(sentinel, SENTINEL_PORT, None, &cmd).await?;
            Ok(entries.into_iter().map(pairs).collect())
        }
    }

    /// Ok with the master when the set is healthy: every sentinel names the same master, sees
    /// it as a master (no failover in progress), knows the two other sentinels and both replicas
    /// as healthy replicas linked to it; and the instances agree.
    async fn healthy(&self) -> Result<Instance, String> {
        let mut master_ip = None;
        for s in &self.shared.sentinels {
            let mut cmd = redis::cmd("SENTINEL");
            cmd.arg("get-master-addr-by-name").arg(MASTER_NAME);
            let named: Option<Vec<String>> = redis_cmd(s, SENTINEL_PORT, None, &cmd).await?;
            let named = named
                .and_then(|v| v.first().cloned())
                .ok_or(format!("sentinel {s} names no master"))?;
            match &master_ip {
                None => master_ip = Some(named),
                Some(m) if *m == named => {}
                Some(m) => return Err(format!("sentinels disagree: {m} / {named}")),
            }
        }
        let master_ip = master_ip.ok_or("no sentinel")?;
        let master = self
            .instances
            .iter()
            .find(|i| i.ip == master_ip)
            .ok_or(format!("unknown master {master_ip}"))?
            .clone();
        for s in &self.shared.sentinels {
            let entries = Self::sentinel_entries(s, "master").await?;
            let Some(m) = entries.first() else {
                return Err(format!("sentinel {s}: no master entry"));
            };
            let field = |k: &str| m.get(k).map(String::as_str).unwrap_or("");
            if field("flags") != "master"
                || field("num-other-sentinels") != "2"
                || field("num-slaves") != "2"
            {
                return Err(format!("sentinel {s}: master {m:?}"));
            }
            for r in Self::sentinel_entries(s, "replicas").await? {
                let field = |k: &str| r.get(k).map(String::as_str).unwrap_or("");
                if field("flags") != "slave"
                    || field("master-link-status") != "ok"
                    || field("master-host") != master_ip
                {
                    return Err(format!("sentinel {s}: replica {r:?}"));
                }
            }
        }
        for i in &self.instances {
            let f = replication(&i.ip, &self.shared.password).await?;
            let role = f.get("role").map(String::as_str);
            let ok = if i.ip == master_ip {
                role == Some("master")
            } else {
                role == Some("slave")
                    && f.get("master_host") == Some(&master_ip)
                    && f.get("master_link_status").map(String::as_str) == Some("up")
            };
            if !ok {
                return Err(format!("{}: {f:?}", i.name));
            }
        }
        Ok(master)
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        // Dropping the supervisors and the sentinels then kills their processes.
        let _ = self.stop.send(true);
    }
}

impl System for SentinelSet {
    fn label(&self) -> &'static str {
        "Sentinel"
    }

    fn endpoints(&self) -> String {
        self.shared
            .sentinels
            .iter()
            .map(|s| format!("{s}:{SENTINEL_PORT}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn master_name(&self) -> String {
        MASTER_NAME.to_string()
    }

    fn password(&self) -> String {
        self.shared.password.clone()
    }

    async fn instances(&self) -> Vec<Instance> {
        self.instances.clone()
    }

    fn artifacts(&self) -> PathBuf {
        self.shared.dir.clone()
    }

    async fn stable(&self) -> Result<Instance, String> {
        self.healthy().await
    }

    fn crash(&self, master: &Instance) {
        self.signal(master, libc::SIGKILL);
    }

    fn freeze(&self, master: &Instance) {
        self.signal(master, libc::SIGSTOP);
    }

    fn resume(&self, master: &Instance) {
        self.signal(master, libc::SIGCONT);
    }

    fn cut_off(&self, master: &Instance) -> Cut {
        // Every packet from or to the master's address on lo. The instances and the sentinels
        // connect from their own addresses (bind-source-addr), so the replicas and the sentinels
        // are on the other side; so are the writers and the benchmark's checks, which connect to
        // the master's.
        let ip = master.ip.as_str();
        Cut::insert(
            None,
            vec![
                rule("INPUT", &["-i", "lo", "-s", ip], "DROP"),
                rule("INPUT", &["-i", "lo", "-d", ip], "DROP"),
                rule("OUTPUT", &["-o", "lo", "-s", ip], "DROP"),
                rule("OUTPUT", &["-o", "lo", "-d", ip], "DROP"),
            ],
        )
    }

    async fn delete(&self, master: &Instance) {
        // redis-server shuts down gracefully on SIGTERM; it comes back as a new pod would, with
        // no restart history.
        self.renew(master).await;
        self.signal(master, libc::SIGTERM);
    }

    async fn roll(&self) {
        panic!("a Sentinel set has no rolling update to measure");
    }

    async fn switchover(&self, _master: &Instance, _target: &Instance) {
        // SENTINEL FAILOVER picks the replica itself. It may refuse for a moment (INPROG,
        // NOGOODSLAVE) right after the set became healthy; retried for a bounded time.
        let sentinel = &self.shared.sentinels[0];
        let mut last = String::new();
        for _ in 0..40 {
            let mut cmd = redis::cmd("SENTINEL");
            cmd.arg("failover").arg(MASTER_NAME);
            match redis_cmd::<String>(sentinel, SENTINEL_PORT, None, &cmd).await {
                Ok(_) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("SENTINEL FAILOVER {MASTER_NAME} refused for 10 s: {last}");
    }

    async fn switch_to(&self, master: &Instance, target: &Instance) {
        // SENTINEL FAILOVER picks by replica-priority first (the lowest, 0 excluded), then by
        // offset: the target gets 1 (the other replica keeps Redis's default, 100) until it is
        // master. The sentinel asked must have read it, from the replica's INFO (every 10 s).
        self.set_priority(target, 1).await;
        let asked = &self.shared.sentinels[0];
        wait_for(
            &format!(
                "sentinel {asked} to read replica-priority 1 of {}",
                target.name
            ),
            Duration::from_secs(30),
            || async {
                let replicas = Self::sentinel_entries(asked, "replicas").await?;
                let entry = replicas
                    .iter()
                    .find(|r| r.get("ip") == Some(&target.ip))
                    .ok_or("not among its replicas")?;
                match entry.get("slave-priority").map(String::as_str) {
                    Some("1") => Ok(()),
                    other => Err(format!("slave-priority {other:?}")),
                }
            },
        )
        .await;
        self.switchover(master, target).await;
        wait_for(
            &format!("{} promoted by SENTINEL FAILOVER", target.name),
            Duration::from_secs(60),
            || async {
                let role = replication(&target.ip, &self.shared.password)
                    .await?
                    .get("role")
                    .cloned();
                match role.as_deref() {
                    Some("master") => Ok(()),
                    other => Err(format!("role {other:?}")),
                }
            },
        )
        .await;
        self.set_priority(target, 100).await;
    }

    async fn renew(&self, instance: &Instance) {
        if let Some(s) = self.supervisor(instance) {
            s.renew();
        }
    }

    async fn names_master(&self, master_ip: &str) -> Result<(), String> {
        for s in &self.shared.sentinels {
            let entries = Self::sentinel_entries(s, "master").await?;
            let Some(m) = entries.first() else {
                return Err(format!("sentinel {s}: no master entry"));
            };
            let ip = m.get("ip").map(String::as_str);
            let flags = m.get("flags").map(String::as_str);
            if ip != Some(master_ip) || flags != Some("master") {
                return Err(format!("sentinel {s}: {ip:?} {flags:?}"));
            }
        }
        Ok(())
    }
}
