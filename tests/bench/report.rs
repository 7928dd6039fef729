//! Statistics, the machine's description and load, and the markdown report.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::footprint::Step;
use crate::scenario::{Change, Run};
use crate::sys::{self, clock_ticks, mono_now};

/// Nearest-rank percentile (`p` in 0..=1) of unsorted values; NaN when there are none. The
/// median is the nearest-rank 50th percentile (the lower middle value for an even count).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

pub fn p90(values: &[f64]) -> f64 {
    percentile(values, 0.9)
}

fn ms(seconds: f64) -> String {
    if seconds.is_finite() {
        format!("{:.0}", seconds * 1000.0)
    } else {
        "—".into()
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "—".into()
    }
}

/// The runs of one system in one comparison, and the runs that failed (with why).
#[derive(Default)]
pub struct Outcomes {
    pub runs: Vec<Run>,
    pub failures: Vec<String>,
}

impl Outcomes {
    fn values(&self, f: impl Fn(&Run) -> f64) -> Vec<f64> {
        self.runs.iter().map(f).collect()
    }

    pub fn lost_wait(&self) -> usize {
        self.runs.iter().map(|r| r.lost_wait).sum()
    }

    pub fn lost_plain(&self) -> usize {
        self.runs.iter().map(|r| r.lost_plain).sum()
    }
}

/// vigil and Sentinel through the same kind of change with the same detection timeout.
pub struct Comparison {
    pub change: Change,
    pub down_after: u64,
    /// The runs asked for, per system.
    pub asked: usize,
    pub vigil: Outcomes,
    pub sentinel: Outcomes,
    /// When it ran (monotonic seconds), for the machine load of that time.
    pub window: (f64, f64),
}

impl Comparison {
    pub fn gap_ratio(&self) -> f64 {
        median(&self.vigil.values(|r| r.gap_plain)) / median(&self.sentinel.values(|r| r.gap_plain))
    }
}

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

/// Everything the report is made of.
pub struct Report {
    pub date: String,
    pub machine: String,
    pub runs: usize,
    pub switchover_runs: usize,
    pub comparisons: Vec<Comparison>,
    pub footprint: Vec<Step>,
    pub failures: Vec<String>,
    /// (busy cores, foreign cores, max foreign) over the whole benchmark.
    pub load: (f64, f64, f64),
    pub load_by_part: Vec<(String, (f64, f64, f64))>,
    pub measuring_seconds: f64,
    pub total_seconds: Option<f64>,
    pub idle_seconds: u64,
}

/// A target and whether it is met.
pub struct Target {
    pub what: String,
    pub measured: String,
    pub met: Option<bool>,
}

fn yes_no(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

impl Report {
    fn find(&self, change: Change, down_after: u64) -> Option<&Comparison> {
        self.comparisons
            .iter()
            .find(|c| c.change == change && c.down_after == down_after)
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let mut down_afters: Vec<u64> = self
            .comparisons
            .iter()
            .filter(|c| c.change == Change::Crash)
            .map(|c| c.down_after)
            .collect();
        down_afters.dedup();
        for d in &down_afters {
            let c = self.find(Change::Crash, *d).expect("listed");
            let m = median(&c.vigil.values(|r| r.gap_plain));
            let bound = (*d as f64 + 500.0) / 1000.0;
            targets.push(Target {
                what: format!("Write gap median <= downAfter + 500 ms (downAfter {d} ms)"),
                measured: format!("vigil {} ms (bound {} ms)", ms(m), ms(bound)),
                met: m.is_finite().then_some(m <= bound),
            });
        }
        let ratio_at_1000 = self.find(Change::Crash, 1000).map(Comparison::gap_ratio);
        targets.push(Target {
            what: "vigil / Sentinel write-gap ratio <= 0.6 at downAfter 1000 ms (medians)".into(),
            measured: ratio_at_1000.map_or("—".into(), |r| format!("{r:.2}")),
            met: ratio_at_1000.filter(|r| r.is_finite()).map(|r| r <= 0.6),
        });
        let vigil_all: Vec<&Outcomes> = self.comparisons.iter().map(|c| &c.vigil).collect();
        let acked: usize = vigil_all
            .iter()
            .flat_map(|o| &o.runs)
            .map(|r| r.acked_wait)
            .sum();
        let lost: usize = vigil_all.iter().map(|o| o.lost_wait()).sum();
        let runs: usize = vigil_all.iter().map(|o| o.runs.len()).sum();
        targets.push(Target {
            what: "Zero `WAIT 1`-acknowledged writes lost (vigil, every run)".into(),
            measured: format!("{lost} lost of {acked} acknowledged over {runs} runs"),
            met: (runs > 0).then_some(lost == 0),
        });
        for (change, what) in [
            (Change::Switchover, "Switchover"),
            (Change::RollingUpdate, "Rolling-update handover"),
        ] {
            targets.push(self.handover_target(change, what));
        }
        targets.extend(crate::footprint::targets(&self.footprint));
        targets
    }

    /// Issue 14: a planned handover pauses a `WAIT 1` client's writes <= 150 ms (median) and
    /// <= 250 ms (p90), and loses nothing.
    fn handover_target(&self, change: Change, what: &str) -> Target {
        let what =
            format!("{what}: `WAIT 1` write pause <= 150 ms median, <= 250 ms p90, 0 writes lost");
        let Some(c) = self
            .comparisons
            .iter()
            .find(|c| c.change == change && !c.vigil.runs.is_empty())
        else {
            return Target {
                what,
                measured: "—".into(),
                met: None,
            };
        };
        let gaps = c.vigil.values(|r| r.gap_wait);
        let (m, p) = (median(&gaps), p90(&gaps));
        let lost = c.vigil.lost_plain() + c.vigil.lost_wait();
        Target {
            what,
            measured: format!(
                "vigil {} ms, p90 {} ms, max {} ms over {} runs (plain writer: {} ms); {lost} \
                 writes lost (plain and `WAIT 1`)",
                ms(m),
                ms(p),
                ms(percentile(&gaps, 1.0)),
                gaps.len(),
                ms(median(&c.vigil.values(|r| r.gap_plain))),
            ),
            met: Some(m <= 0.15 && p <= 0.25 && lost == 0),
        }
    }

    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# Benchmarks: vigil vs Redis Sentinel, {}\n", self.date);
        let _ = writeln!(
            o,
            "Produced by `make bench` (tests/bench.sh, tests/bench/). Asked for: {} runs per \
             system and detection timeout of each fault, {} per system of each planned change \
             (switchover, rolling update). Measuring took {:.1} min{}.\n",
            self.runs,
            self.switchover_runs,
            self.measuring_seconds / 60.0,
            self.total_seconds.map_or(String::new(), |t| format!(
                "; the whole `make bench` (build, control plane start, measuring) {:.1} min",
                t / 60.0
            )),
        );
        self.runs_made(&mut o);
        let _ = write!(o, "## Machine\n\n{}", self.machine);
        let (busy, foreign, max) = self.load;
        let _ = writeln!(
            o,
            "- Load while measuring: the machine's CPUs were busy {busy:.2} cores on average; \
             processes outside the benchmark (other work sharing the machine) used {foreign:.2} \
             cores on average, at most {max:.2} over a 2 s sample.{}\n",
            if foreign > 0.1 {
                " **Other work shared the machine**: absolute figures are pessimistic; vigil and \
                 Sentinel runs alternate, so the comparison is affected alike."
            } else {
                ""
            }
        );

        let _ = writeln!(o, "## Targets\n");
        let _ = writeln!(o, "| Target | Measured | |\n|---|---|---|");
        for t in self.targets() {
            let _ = writeln!(o, "| {} | {} | {} |", t.what, t.measured, yes_no(t.met));
        }
        let _ = writeln!(
            o,
            "\nThe benchmark is a report: a target not met does not fail it.\n"
        );

        self.fault_section(
            &mut o,
            Change::Crash,
            "the master's process SIGKILLed",
            CRASH_NOTE,
        );
        self.fault_section(
            &mut o,
            Change::RepeatCrash,
            "the master's process SIGKILLed again, within its restart back-off",
            REPEAT_CRASH_NOTE,
        );
        self.fault_section(
            &mut o,
            Change::Freeze,
            "the master frozen (SIGSTOP)",
            FREEZE_NOTE,
        );
        self.fault_section(
            &mut o,
            Change::Partition,
            "the master cut off from everything, clients included",
            PARTITION_NOTE,
        );
        self.fault_section(
            &mut o,
            Change::Delete,
            "the master stopped gracefully (its pod deleted; SIGTERM)",
            DELETE_NOTE,
        );
        let again = |sentinel: bool| {
            self.comparisons
                .iter()
                .filter(|c| matches!(c.change, Change::Crash | Change::RepeatCrash))
                .flat_map(|c| {
                    if sentinel {
                        &c.sentinel.runs
                    } else {
                        &c.vigil.runs
                    }
                })
                .any(|r| r.promotions > 1)
        };
        if again(true) {
            let _ = writeln!(o, "{SENTINEL_AGAIN_NOTE}\n");
        }
        if again(false) {
            let _ = writeln!(
                o,
                "vigil promoted more than one replica in some runs: see *Every run* below.\n"
            );
        }
        let _ = writeln!(
            o,
            "## Planned switchover: vigil's `redis.vigil.dev/switchover-to` vs `SENTINEL \
             FAILOVER`\n"
        );
        for c in self
            .comparisons
            .iter()
            .filter(|c| c.change == Change::Switchover)
        {
            self.comparison_table(&mut o, c);
            let _ = writeln!(o, "{SWITCHOVER_NOTE}\n");
        }
        let rolling: Vec<&Comparison> = self
            .comparisons
            .iter()
            .filter(|c| c.change == Change::RollingUpdate)
            .collect();
        if !rolling.is_empty() {
            let _ = writeln!(
                o,
                "## Rolling update: vigil's master handover (no Sentinel counterpart)\n"
            );
            for c in rolling {
                self.comparison_table(&mut o, c);
                let _ = writeln!(o, "{ROLLING_NOTE}\n");
            }
        }

        o.push_str(&crate::footprint::section(
            &self.footprint,
            self.idle_seconds,
        ));

        if !self.failures.is_empty() {
            let _ = writeln!(o, "## Parts that failed\n");
            for f in &self.failures {
                let _ = writeln!(o, "- {f}");
            }
            let _ = writeln!(o);
        }

        let _ = writeln!(o, "## How it is measured\n\n{METHOD}");
        let _ = writeln!(o, "\n## Machine load by part\n");
        let _ = writeln!(
            o,
            "| Part | Machine busy (cores) | Outside the benchmark (cores, avg) | Outside \
             (max 2 s) |\n|---|---|---|---|"
        );
        for (part, (busy, foreign, max)) in &self.load_by_part {
            let _ = writeln!(o, "| {part} | {busy:.2} | {foreign:.2} | {max:.2} |");
        }
        let _ = writeln!(o, "\n## Every run\n");
        for c in &self.comparisons {
            self.raw_runs(&mut o, c);
        }
        o
    }

    /// The runs each part made, of those asked for: a system is not run again after five
    /// failed runs (a part that could not start at all is under *Parts that failed*).
    fn runs_made(&self, o: &mut String) {
        if self.comparisons.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "| Part | downAfter (ms) | Asked | vigil made | Sentinel made |\n|---|---|---|---|---|"
        );
        for c in &self.comparisons {
            let made = |out: &Outcomes| {
                let failed = out.failures.len();
                if failed == 0 {
                    out.runs.len().to_string()
                } else {
                    format!("{} ({failed} failed)", out.runs.len())
                }
            };
            let sentinel = if c.change.both() {
                made(&c.sentinel)
            } else {
                "— (no counterpart)".into()
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {sentinel} |",
                c.change.part(),
                c.down_after,
                c.asked,
                made(&c.vigil)
            );
        }
        let _ = writeln!(o);
    }

    /// The tables of one unplanned fault, when it was measured, and how to read them.
    fn fault_section(&self, o: &mut String, change: Change, title: &str, note: &str) {
        let measured: Vec<&Comparison> = self
            .comparisons
            .iter()
            .filter(|c| c.change == change)
            .collect();
        if measured.is_empty() {
            return;
        }
        let _ = writeln!(o, "## Unplanned failover: {title}\n");
        for c in measured {
            self.comparison_table(o, c);
        }
        let _ = writeln!(o, "{note}\n");
    }

    fn comparison_table(&self, o: &mut String, c: &Comparison) {
        let (v, s) = (&c.vigil, &c.sentinel);
        let what = match c.change {
            Change::Crash => "crash",
            Change::RepeatCrash => "second crash",
            Change::Freeze => "freeze",
            Change::Partition => "cut",
            Change::Delete => "delete",
            Change::Switchover => "request",
            Change::RollingUpdate => "spec change",
        };
        let _ = writeln!(
            o,
            "### downAfter {} ms: vigil {} runs, Sentinel {} runs\n",
            c.down_after,
            v.runs.len(),
            s.runs.len()
        );
        let _ = writeln!(
            o,
            "| Figure (ms) | vigil median | vigil p90 | Sentinel median | Sentinel p90 | vigil / \
             Sentinel (medians) |\n|---|---|---|---|---|---|"
        );
        type Figure = Box<dyn Fn(&Run) -> f64>;
        let mut rows: Vec<(String, Figure)> = vec![
            ("Write gap, plain writer".into(), Box::new(|r| r.gap_plain)),
            (
                "Write gap, `WAIT 1` writer".into(),
                Box::new(|r| r.gap_wait),
            ),
            (
                format!("{what} → first acknowledged write on the new master"),
                Box::new(|r| r.to_first_write),
            ),
            (
                format!("{what} → the other replica follows the new master"),
                Box::new(|r| r.survivor_follows),
            ),
            (
                format!("{what} → every replica follows (old master included)"),
                Box::new(|r| r.all_follow),
            ),
        ];
        // Silence has to be waited out: how much longer than that each system takes.
        if matches!(c.change, Change::Freeze | Change::Partition) {
            let down_after = c.down_after as f64 / 1000.0;
            rows.insert(
                2,
                (
                    "Margin over downAfter: write gap − downAfter, plain writer".into(),
                    Box::new(move |r| r.gap_plain - down_after),
                ),
            );
        }
        for (label, f) in rows {
            let (vm, sm) = (median(&v.values(&f)), median(&s.values(&f)));
            let _ = writeln!(
                o,
                "| {label} | {} | {} | {} | {} | {} |",
                ms(vm),
                ms(p90(&v.values(&f))),
                ms(sm),
                ms(p90(&s.values(&f))),
                ratio(vm, sm)
            );
        }
        let lost = |out: &Outcomes, wait: bool| {
            let acked: usize = out
                .runs
                .iter()
                .map(|r| if wait { r.acked_wait } else { r.acked_plain })
                .sum();
            let lost: usize = if wait {
                out.lost_wait()
            } else {
                out.lost_plain()
            };
            let runs_with = out
                .runs
                .iter()
                .filter(|r| (if wait { r.lost_wait } else { r.lost_plain }) > 0)
                .count();
            format!("{lost} of {acked} ({runs_with} runs with a loss)")
        };
        let promoted_again = |out: &Outcomes| {
            let n = out.runs.iter().filter(|r| r.promotions > 1).count();
            format!("{n} of {}", out.runs.len())
        };
        let _ = writeln!(
            o,
            "\n| Acknowledged writes lost | vigil | Sentinel |\n|---|---|---|\n| plain \
             writer | {} | {} |\n| `WAIT 1` writer | {} | {} |\n| Runs that promoted more than \
             one replica before settling | {} | {} |\n",
            lost(v, false),
            lost(s, false),
            lost(v, true),
            lost(s, true),
            promoted_again(v),
            promoted_again(s)
        );
        for (label, out) in [("vigil", v), ("Sentinel", s)] {
            for f in &out.failures {
                let _ = writeln!(o, "- {label}: a run failed: {f}");
            }
        }
        if !v.failures.is_empty() || !s.failures.is_empty() {
            let _ = writeln!(o);
        }
    }

    fn raw_runs(&self, o: &mut String, c: &Comparison) {
        let kind = match c.change {
            Change::Crash => "Unplanned failover",
            Change::RepeatCrash => "Repeat crash",
            Change::Freeze => "Frozen master",
            Change::Partition => "Partitioned master",
            Change::Delete => "Deleted master",
            Change::Switchover => "Switchover",
            Change::RollingUpdate => "Rolling update",
        };
        let _ = writeln!(
            o,
            "<details><summary>{kind}, downAfter {} ms</summary>\n\n| System | # | From → to \
             | Gap plain | Gap `WAIT 1` | First write | Other replica | Every replica | Lost \
             plain | Lost `WAIT 1` | Promotions |\n|---|---|---|---|---|---|---|---|---|---|---|",
            c.down_after
        );
        for (label, out) in [("vigil", &c.vigil), ("Sentinel", &c.sentinel)] {
            for (n, r) in out.runs.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "| {label} | {} | {} → {} | {} | {} | {} | {} | {} | {}/{} | {}/{} | {} |",
                    n + 1,
                    r.from,
                    r.to,
                    ms(r.gap_plain),
                    ms(r.gap_wait),
                    ms(r.to_first_write),
                    ms(r.survivor_follows),
                    ms(r.all_follow),
                    r.lost_plain,
                    r.acked_plain,
                    r.lost_wait,
                    r.acked_wait,
                    r.promotions
                );
            }
        }
        let _ = writeln!(o, "\n</details>\n");
    }
}

/// Why vigil's crash figures do not grow with downAfter.
const CRASH_NOTE: &str = "\
How to read this: the crashed container is restarted by the kubelet (its first restart at \
once), and vigil's agent boots it fenced (read-only, following nobody). The operator then sees the master \
restarted and no longer a master, which is objective evidence, and fails over at once rather \
than waiting out `downAfterMilliseconds` (src/controller/plan.rs); so vigil's figures follow the \
restart back-off, not the detection timeout. A master that stays unreachable without \
restarting (frozen, partitioned) waits for `downAfterMilliseconds` as Sentinel does (both are \
measured below). Sentinel cannot tell a restart from a blip: its restarted instance stays \
down until the sentinels name another master (see below), so Sentinel always waits \
`down-after-milliseconds`, then agrees (quorum 2), elects a leader and promotes.";

/// How the repeat crash is set up, and what its figures include.
const REPEAT_CRASH_NOTE: &str = "\
How to read this: each run first crashes the master once, unmeasured; once the set has failed \
over and the crashed instance is back as a replica (restarted at once: a first crash), the master \
is switched back to that instance (vigil: `redis.vigil.dev/switchover-to`; Sentinel: `SENTINEL \
FAILOVER` with that replica's `replica-priority` set to 1, so that Sentinel picks it, and back \
to 100 once it is master). Then that same instance is crashed again, measured, with no fresh \
restart history in between: its restart waits out the back-off, 10 s counted from the crash (the \
kubelet's CrashLoopBackOff for vigil's pod, the supervisor's copy of it for Sentinel's process), \
so *every replica follows* includes that wait for both. vigil does not wait for the restart to \
fail over: a container waiting in back-off is objective evidence too.";

/// What a frozen master costs each system.
const FREEZE_NOTE: &str = "\
How to read this: a frozen master is silence, not evidence: its pod still runs and its address \
accepts connections that never answer. Sentinel waits `down-after-milliseconds`, agrees and \
promotes. vigil waits `downAfterMilliseconds`, needs the replicas' offsets to have stood still \
as long, and promotes only once a master cut off rather than frozen must have fenced itself \
(safety rule 9: the promotion hold, 1.85 s at 1000 ms and 3.35 s at 5000 ms, counted from when \
the silence is recorded; src/isolation.rs). Sentinel has no such wait, and no fence: a \
partitioned Sentinel master keeps taking writes.";

/// How the master is cut off on each side.
const PARTITION_NOTE: &str = "\
How to read this: iptables rules drop every packet to and from the master, clients on the other \
side with the replicas and the watchers. vigil's are inside the pod's network namespace and spare \
its loopback and the kubelet's probes of the agent (port 8080), as a partitioned node's kubelet \
still probes its pods: the pod runs on (and reports itself not ready once it has fenced itself). \
Sentinel's are on `lo`, on every packet from or to the master's address (each instance and \
sentinel connects from its own: `bind-source-addr`). The figures count from when the rules are \
in. The rules are removed once a new master is seen, so *every replica follows* includes the old \
master's return (Sentinel converts it 8 s after it reports itself a master again, as after a \
switchover). Like a freeze this is silence: both wait out the detection timeout, and vigil holds \
the promotion until a master cut off must have fenced itself (see the freeze note).";

/// What a graceful stop is on each side.
const DELETE_NOTE: &str = "\
How to read this: vigil's master pod is deleted with the default grace period (`kubectl delete \
pod`); its agent, given SIGTERM by the kubelet, waits (bounded) for the switchover that the \
pod's deletion makes the operator start (safety rule 7), then stops Redis, and the operator \
creates the pod anew; so this is a planned handover, and *every replica follows* includes the \
new pod's start. Sentinel's master gets SIGTERM: redis-server shuts down gracefully (pausing \
writes until its replicas have caught up, for at most `shutdown-timeout`, 10 s) and its \
supervisor restarts it at once with no restart history, as a new pod; Sentinel learns of it only \
when it stops answering, and waits `down-after-milliseconds` as for a crash.";

/// What was seen in the Sentinel logs when Sentinel promoted twice.
const SENTINEL_AGAIN_NOTE: &str = "\
Sentinel promoting more than one replica: in the Sentinel logs of such runs (kept in the \
benchmark's artifacts), one sentinel marks the master it has just switched to (`+switch-master`) \
subjectively down about `down-after-milliseconds` later, although that master is up and taking \
writes, reaches `+odown` in the same millisecond (the other sentinels' votes about the crashed \
master still count), wins an election and fails the new master over as well. The first \
promoted replica then stays a master next to the second until Sentinel converts it, 8 s or more \
later (see the switchover note below): a plain client connected to it keeps writing there, and \
all of it is lost.";

/// What the switchover figures mean for Sentinel (its write gap alone would mislead).
const SWITCHOVER_NOTE: &str = "\
How to read this: `SENTINEL FAILOVER` promotes a replica with `REPLICAOF NO ONE` while the old \
master keeps running as a master; Sentinel turns it into a replica only once it has reported \
itself as a master for 8 s (`SENTINEL_PUBLISH_PERIOD * 4` in sentinel.c), and until then a \
client connected to it keeps writing there. So Sentinel's *plain* write gap is short, but those \
writes are acknowledged by the old master and then discarded (*lost*); and the replica Sentinel \
did not promote acknowledges `WAIT 1` for the old master until it is pointed at the new one, so \
even `WAIT 1` does not protect every write. vigil's switchover pauses writes on the old master \
(`CLIENT PAUSE WRITE`), reads the target's offset until it has all of them, swaps the roles with \
`FAILOVER TO ... FORCE` (not waiting for the replica's once-a-second ack) and closes the old \
master's clients.";

/// What the rolling-update figures are.
const ROLLING_NOTE: &str = "\
How to read this: a new pod spec (a new CPU request: the node runs only the images it imported) \
makes the operator replace the replicas one at a time, each in sync before the next, then hand the \
master role over with the same switchover as above and replace the old master last. The write \
gap is that handover; *spec change → ...* spans the whole roll (the replicas' replacement \
included).";

const METHOD: &str = "\
- **Both systems, same client, same machine, same time.** For each detection timeout, a vigil \
`RedisReplication` (`instances: 3`, `failover.downAfterMilliseconds` = the timeout) and a Sentinel \
set run side by side; runs alternate vigil, Sentinel, vigil, ... so load from elsewhere hits \
both alike. Each run starts from a healthy set (every replica linked; vigil Ready with its 2 s \
failover cooldown passed; every sentinel naming the same master, knowing the other two sentinels \
and both replicas as healthy).
- **vigil**: the operator as the e2e tests run it (one `vigil operator` per namespace, the chart's \
RBAC, probe interval 1000 ms, failover cooldown 2 s), pods on the real node: the kubelet on \
containerd runs the server image built from `images/server` in its `SERVER=redis` variant \
(`vigil agent` supervising Debian's `redis-server`, the same as the Sentinel side's), clients \
through the operator's Sentinel endpoint (one endpoint).
- **Sentinel**: three `redis-sentinel` (`sentinel monitor bench <master> 6379 2`, the same \
`down-after-milliseconds`, `failover-timeout 10000` (Sentinel's default is 180000; it also \
bounds the leader election), `parallel-syncs 2`) watching three `redis-server` with vigil's \
redis.conf defaults (no persistence, diskless sync without delay, `replica-announce-ip`). Auth \
as vigil: a password on the instances (`requirepass`/`masterauth`, `sentinel auth-pass`), none on \
the Sentinel endpoints. Each process has its own 10.245.x.y address on `lo`.
- **The crash**: SIGKILL of the master's process: vigil's pod container (every process of it, \
through the CRI, as the e2e chaos tests do), Sentinel's `redis-server`. vigil's is restarted by \
the kubelet, Sentinel's by a supervisor with the kubelet's crash back-off (the first restart at \
once; a later crash waits 10 s from the crash, doubling each restart). After each crash run the crashed instance gets a fresh restart history (vigil: its pod is deleted and \
recreated; Sentinel: the supervisor forgets the back-off), so every crash run is a first crash \
(the repeat crash's, a second: see its section). \
Neither comes back as a writable master on its own: vigil's agent boots it \
fenced until the operator decides; the Sentinel side's start script asks the sentinels for the \
master and starts as its replica, waiting while they still name the crashed instance (Sentinel \
deployments do this so that an empty restarted master is never synced from). So *every replica \
follows* includes the old master rejoining, for both.
- **The client**: redis-py's `Sentinel` (`master_for`, socket timeouts 0.5 s) in \
tests/clients/py-failover/failover.py, given all Sentinel endpoints; two writers per run, one \
plain (`SET`: acknowledged on `OK`) and one with `WAIT 1 1000` (acknowledged only when a replica \
has it); each writes every 10 ms and retries 20 ms after an error, stamping each line with \
`time.monotonic()`.
- **Write gap**: the last acknowledged write on the old master to the first acknowledged write on \
the new one, per writer. **First write**: crash (or request) to that first write. **The other \
replica follows / every replica follows**: crash (or request) until `INFO replication` (polled \
every 50 ms on each instance) shows that replica (every non-master, the old master included) \
with `master_host` the new master and `master_link_status:up`. **Lost**: acknowledged keys \
missing on the new master once the run is over. **Margin over downAfter** (freeze, partition: \
silence, which both must wait out): the plain writer's gap less the detection timeout, per run.
- **Switchover**: vigil is asked for the replica with the highest ordinal; `SENTINEL FAILOVER` \
picks its replica itself.
- Statistics: median and p90 are nearest-rank; ratios are vigil's median over Sentinel's.";
