//! Small helpers of the benchmark: the clock the clients stamp their lines with, one-shot Redis
//! commands, iptables rules, `/proc` readings of a process and of the machine.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

/// CLOCK_MONOTONIC in seconds: the clock of Python's `time.monotonic()`, which the writers stamp
/// their lines with, so crash times and write times compare directly.
pub fn mono_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Connecting, authenticating and the reply each bounded by this.
const REDIS_TIMEOUT: Duration = Duration::from_millis(800);

/// Runs one command on a fresh connection to `ip:port` (AUTH first when a password is given).
/// A fresh connection each time: the instances polled are killed and restarted under us.
pub async fn redis_cmd<T: redis::FromRedisValue>(
    ip: &str,
    port: u16,
    password: Option<&str>,
    cmd: &redis::Cmd,
) -> Result<T, String> {
    let mut settings = RedisConnectionInfo::default();
    if let Some(password) = password {
        settings = settings.set_password(password);
    }
    let info = ConnectionAddr::Tcp(ip.to_string(), port)
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    let work = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        cmd.query_async::<T>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(REDIS_TIMEOUT * 3, work).await {
        Ok(result) => result.map_err(|e| format!("{ip}:{port}: {e}")),
        Err(_) => Err(format!("{ip}:{port}: no answer in {:?}", REDIS_TIMEOUT * 3)),
    }
}

/// `INFO replication` of an instance, as fields.
pub async fn replication(ip: &str, password: &str) -> Result<HashMap<String, String>, String> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("replication");
    let text: String = redis_cmd(ip, 6379, Some(password), &cmd).await?;
    Ok(fields(&text))
}

/// `key:value` lines (INFO) as a map.
pub fn fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What an instance reports about its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Down(String),
    Master,
    /// Replica of `host`, link up or not.
    Replica {
        host: String,
        link_up: bool,
    },
}

impl Seen {
    pub async fn of(ip: &str, password: &str) -> Self {
        match replication(ip, password).await {
            Err(e) => Seen::Down(e),
            Ok(f) => match f.get("role").map(String::as_str) {
                Some("master") => Seen::Master,
                Some("slave") => Seen::Replica {
                    host: f.get("master_host").cloned().unwrap_or_default(),
                    link_up: f.get("master_link_status").map(String::as_str) == Some("up"),
                },
                other => Seen::Down(format!("role {other:?}")),
            },
        }
    }

    pub fn follows(&self, master_ip: &str) -> bool {
        matches!(self, Seen::Replica { host, link_up: true } if host == master_ip)
    }
}

/// The comment on every iptables rule the benchmark adds, so that they are told from others'.
pub const RULE_COMMENT: &str = "vigil-bench";

/// An iptables rule, chain first, with the benchmark's comment: `<chain> <matches...> -m comment
/// --comment vigil-bench -j <target>`. Removed by the same words, it removes exactly that rule.
pub fn rule(chain: &str, matches: &[&str], target: &str) -> Vec<String> {
    let mut rule = vec![chain.to_string()];
    rule.extend(matches.iter().map(|m| m.to_string()));
    rule.extend(["-m", "comment", "--comment", RULE_COMMENT, "-j", target].map(String::from));
    rule
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The fields of `/proc/<pid>/stat` after the command name (field 3, the state, is index 0).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// User + system CPU ticks of a process (fields 14 and 15 of `/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(11)? + f.get(12)?)
}

/// A kernel thread (PF_KTHREAD in the flags, field 9).
fn is_kernel_thread(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.get(6).copied())
        .is_some_and(|flags| flags & 0x0020_0000 != 0)
}

/// `VmRSS` and `VmHWM` (peak RSS) of a process, in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Busy and total CPU ticks of the whole machine (`/proc/stat`, first line).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

fn net_ns(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// CPU ticks so far of every user process outside our network namespace (other people's work
/// on the machine: the benchmark itself and all it starts run inside a private one), by pid.
pub fn foreign_ticks() -> HashMap<u32, u64> {
    let ours = net_ns("self");
    let mut ticks = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return ticks;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let ns = net_ns(&pid.to_string());
        if ns.is_none() || ns == ours || is_kernel_thread(pid) {
            continue;
        }
        if let Some(t) = cpu_ticks(pid) {
            ticks.insert(pid, t);
        }
    }
    ticks
}

/// The command line of a process, split.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of all processes.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// stdout of a command, trimmed; empty when it cannot run.
pub fn output_of(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A file's text, or empty.
pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
