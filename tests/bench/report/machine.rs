//! The machine the benchmark runs on: its description and the versions measured, and its load.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sys::{self, clock_ticks, mono_now};

/// Samples the machine's CPU every 2 s: all of it, and what processes outside the benchmark's
/// network namespace (other people's work) used.
pub struct LoadMonitor {
    /// (at, machine busy cores, foreign cores) over the 2 s before `at`.
    samples: Arc<Mutex<Vec<(f64, f64, f64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoadMonitor {
    pub fn start() -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let mut prev_machine = sys::machine_ticks();
            let mut prev_foreign = sys::foreign_ticks();
            let mut prev_at = mono_now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let at = mono_now();
                let machine = sys::machine_ticks();
                let foreign = sys::foreign_ticks();
                let busy = match (prev_machine, machine) {
                    (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                        (b1 - b0) as f64 / (t1 - t0) as f64 * cores
                    }
                    _ => f64::NAN,
                };
                let foreign_delta: u64 = foreign
                    .iter()
                    .map(|(pid, t)| t.saturating_sub(prev_foreign.get(pid).copied().unwrap_or(0)))
                    .sum();
                let foreign_cores = foreign_delta as f64 / clock_ticks() / (at - prev_at);
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((at, busy, foreign_cores));
                (prev_machine, prev_foreign, prev_at) = (machine, foreign, at);
            }
        });
        Self { samples, task }
    }

    /// Average machine-busy and foreign cores over `[from, to]`, and the largest foreign 2 s
    /// sample.
    pub fn window(&self, from: f64, to: f64) -> (f64, f64, f64) {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let inside: Vec<&(f64, f64, f64)> = samples
            .iter()
            .filter(|(at, _, _)| *at >= from && *at <= to + 2.0)
            .collect();
        if inside.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        let n = inside.len() as f64;
        let busy = inside
            .iter()
            .map(|s| s.1)
            .filter(|b| b.is_finite())
            .sum::<f64>()
            / n;
        let foreign = inside.iter().map(|s| s.2).sum::<f64>() / n;
        let max = inside.iter().map(|s| s.2).fold(0.0, f64::max);
        (busy, foreign, max)
    }
}

impl Drop for LoadMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The machine and the versions of everything measured, as markdown list items.
pub fn machine() -> String {
    let cpuinfo = sys::read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = sys::fields(&sys::read("/proc/meminfo"));
    let mem_gib = meminfo
        .get("MemTotal")
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let os = sys::read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let kernel = sys::read("/proc/sys/kernel/osrelease").trim().to_string();
    let redis_server = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let redis_sentinel =
        std::env::var("REDIS_SENTINEL").unwrap_or_else(|_| "redis-sentinel".into());
    let python = crate::support::clients::clients_dir().join("python-redis");
    let py = sys::output_of(
        &python,
        &[
            "-c",
            "import redis, sys; print(redis.__version__, sys.version.split()[0])",
        ],
    );
    let (redis_py, python_version) = py.split_once(' ').unwrap_or((&py, ""));
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let kube_json = sys::output_of(&kubectl, &["version", "-o", "json"]);
    let kube = serde_json::from_str::<serde_json::Value>(&kube_json)
        .ok()
        .and_then(|v| {
            v["serverVersion"]["gitVersion"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    let git = sys::output_of("git", &["rev-parse", "--short", "HEAD"]);
    let dirty =
        !sys::output_of("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let rustc = sys::output_of("rustc", &["--version"]);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "- CPU: {cores} cores ({model}); memory {mem_gib:.1} GiB"
    );
    let _ = writeln!(out, "- OS: {os}, Linux {kernel}");
    let _ = writeln!(
        out,
        "- vigil {} (git {git}{}), operator and the pods' `vigil agent` built `{profile}` \
         with {rustc}",
        env!("CARGO_PKG_VERSION"),
        if dirty {
            ", with uncommitted changes"
        } else {
            ""
        },
    );
    // "Redis server v=7.0.15 sha=..." -> "7.0.15"
    let version = |program: &str| {
        let text = sys::output_of(program, &["--version"]);
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .map_or(text.clone(), str::to_string)
    };
    let _ = writeln!(
        out,
        "- Redis: redis-server {} for vigil's instances and the Sentinel set alike, \
         redis-sentinel {} (Debian packages)",
        version(&redis_server),
        version(&redis_sentinel),
    );
    let _ = writeln!(
        out,
        "- Client: redis-py {redis_py} on Python {python_version} \
         (tests/clients/py-failover/failover.py)"
    );
    let node = std::env::var("BENCH_NODE_LINE").unwrap_or_else(|_| "unknown".into());
    let _ = writeln!(
        out,
        "- Kubernetes: local control plane {kube} (etcd, kube-apiserver, \
         kube-controller-manager) and a real node (tests/node/), in a private network \
         namespace: {node}"
    );
    out
}
