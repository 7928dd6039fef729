//! Benchmarks (DESIGN §7): vigil against real Redis Sentinel, side by side on one machine with
//! the same detection timeout and the same client, and the operator's footprint as the number of
//! `RedisReplication`s grows. Run by `make bench` (tests/bench.sh) on the local cluster's real node;
//! prints the results and writes them to bench/results/<date>.md. A report, not a test: a target
//! not met is reported, not failed; only a part with nothing measured fails the run.
//!
//! Environment (defaults in brackets): BENCH_RUNS [20] runs of each fault per system and
//! detection timeout; BENCH_SWITCHOVER_RUNS [20] of each planned change; BENCH_DOWN_AFTER
//! [1000,5000] (ms; planned changes run with the first); BENCH_SCALE [100,1000,300x3]
//! replications of one instance (`NxK`: N of K instances each); BENCH_IDLE_SECONDS [20];
//! BENCH_BATCH [100] replications created at a time, the next once those are Ready (0: all at
//! once);
//! BENCH_PARTS [failover,repeat-crash,freeze,partition,delete,switchover,rolling,footprint,backup]
//! (`failover`: SIGKILL of the master; `repeat-crash`: SIGKILL of a master that crashed once
//! already, within its restart back-off; `freeze`: SIGSTOP of the master; `partition`: the master
//! cut off from everything, clients included; `delete`: the master's pod deleted, Sentinel's
//! SIGTERMed; `rolling`: vigil's rolling update, measured at the master's handover; `backup`:
//! backup and restore throughput against the AWS CLI, BENCH_BACKUP_RUNS [3] of a BENCH_BACKUP_MB
//! [100] set); BENCH_OUT [bench/results/<date>.md].

// The e2e harness, shared rather than copied; the benchmark uses a part of it.
#[allow(dead_code)]
#[path = "../e2e/support/mod.rs"]
mod support;

mod backup;
mod footprint;
mod report;
mod scenario;
mod sentinel;
mod supervisor;
mod sys;
mod vigil_side;
mod writer;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use futures::FutureExt;
use k8s_openapi::jiff;

use report::{Comparison, LoadMonitor, Outcomes, Report};
use scenario::{Change, System};
use sentinel::SentinelSet;
use sys::mono_now;
use vigil_side::VigilSet;

struct Config {
    runs: usize,
    switchover_runs: usize,
    down_after: Vec<u64>,
    scale: Vec<footprint::Scale>,
    idle_seconds: u64,
    batch: usize,
    parts: Vec<String>,
    out: Option<PathBuf>,
}

fn env_list<T: std::str::FromStr>(var: &str, default: &str) -> Vec<T> {
    let text = std::env::var(var).unwrap_or_else(|_| default.to_string());
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}={text}: cannot parse {s:?}"))
        })
        .collect()
}

fn env_one<T: std::str::FromStr>(var: &str, default: &str) -> T {
    env_list::<T>(var, default)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{var} is empty"))
}

impl Config {
    fn from_env() -> Self {
        let runs = env_one("BENCH_RUNS", "20");
        Self {
            runs,
            switchover_runs: env_one("BENCH_SWITCHOVER_RUNS", "20"),
            down_after: env_list("BENCH_DOWN_AFTER", "1000,5000"),
            scale: env_list("BENCH_SCALE", "100,1000,300x3"),
            idle_seconds: env_one("BENCH_IDLE_SECONDS", "20"),
            batch: env_one("BENCH_BATCH", "100"),
            parts: env_list(
                "BENCH_PARTS",
                "failover,repeat-crash,freeze,partition,delete,switchover,rolling,footprint,backup",
            ),
            out: std::env::var_os("BENCH_OUT").map(PathBuf::from),
        }
    }

    fn has(&self, part: &str) -> bool {
        self.parts.iter().any(|p| p == part)
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let text = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into());
    let text = text.replace('\n', " ");
    match text.char_indices().nth(600) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

/// One measured run of `system`, kept in `out`; a failed run is recorded with why. After five
/// failures the system is not run again in this comparison.
async fn one<S: System>(system: &S, out: &mut Outcomes, change: Change, tag: String) {
    if out.failures.len() >= 5 {
        return;
    }
    let began = mono_now();
    match AssertUnwindSafe(scenario::run(system, change, &tag))
        .catch_unwind()
        .await
    {
        Ok(r) => {
            eprintln!(
                "bench {tag} ({:.1} s): {} -> {}: gap {:.0} ms (WAIT 1: {:.0} ms), first write \
                 {:.0} ms, promoted {:.0} ms, other replica {:.0} ms, every replica {:.0} ms, \
                 lost {}/{} plain, {}/{} WAIT 1, {} promotion(s)",
                mono_now() - began,
                r.from,
                r.to,
                r.gap_plain * 1e3,
                r.gap_wait * 1e3,
                r.to_first_write * 1e3,
                r.promoted * 1e3,
                r.survivor_follows * 1e3,
                r.all_follow * 1e3,
                r.lost_plain,
                r.acked_plain,
                r.lost_wait,
                r.acked_wait,
                r.promotions
            );
            out.runs.push(r);
        }
        Err(p) => {
            let message = panic_message(p);
            eprintln!("bench {tag}: FAILED: {message}");
            // The harness's messages name the run already.
            if message.starts_with(&tag) {
                out.failures.push(message);
            } else {
                out.failures.push(format!("{tag}: {message}"));
            }
        }
    }
}

/// `runs` changes of each system, alternating vigil and Sentinel (vigil alone for a change
/// Sentinel has no counterpart of).
async fn alternate(
    vigil: &VigilSet,
    sentinel: &SentinelSet,
    change: Change,
    down_after: u64,
    runs: usize,
) -> Comparison {
    let from = mono_now();
    let kind = change.tag();
    let mut c = Comparison {
        change,
        down_after,
        asked: runs,
        vigil: Outcomes::default(),
        sentinel: Outcomes::default(),
        window: (from, from),
    };
    for i in 1..=runs {
        one(
            vigil,
            &mut c.vigil,
            change,
            format!("vigil-{down_after}-{kind}-{i}"),
        )
        .await;
        if !change.both() {
            continue;
        }
        one(
            sentinel,
            &mut c.sentinel,
            change,
            format!("sentinel-{down_after}-{kind}-{i}"),
        )
        .await;
    }
    c.window.1 = mono_now();
    c
}

/// Both systems with one detection timeout, side by side, through `changes` (each with its
/// number of runs).
async fn compare(down_after: u64, net: u8, changes: &[(Change, usize)]) -> Vec<Comparison> {
    let artifacts = PathBuf::from(
        std::env::var_os("VIGIL_E2E_ARTIFACTS").expect("VIGIL_E2E_ARTIFACTS (run tests/bench.sh)"),
    );
    eprintln!("bench: starting vigil and Sentinel with downAfter {down_after} ms");
    let vigil = VigilSet::start(&format!("bench-v{down_after}"), down_after).await;
    let sentinel = SentinelSet::start(
        net,
        artifacts.join(format!("sentinel-{down_after}")),
        down_after,
    )
    .await;
    let mut out = Vec::new();
    for &(change, runs) in changes {
        out.push(alternate(&vigil, &sentinel, change, down_after, runs).await);
    }
    sentinel.stop().await;
    drop(vigil);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn benchmark() {
    let cfg = Config::from_env();
    let started = mono_now();
    let load = LoadMonitor::start();
    let machine = report::machine();
    let mut comparisons = Vec::new();
    let mut failures = Vec::new();
    let mut load_by_part = Vec::new();

    for (n, &down_after) in cfg.down_after.iter().enumerate() {
        // Planned changes with the first detection timeout only.
        let changes: Vec<(Change, usize)> = Change::ALL
            .into_iter()
            .filter(|c| cfg.has(c.part()) && (n == 0 || !c.planned()))
            .map(|c| {
                let runs = if c.planned() {
                    cfg.switchover_runs
                } else {
                    cfg.runs
                };
                (c, runs)
            })
            .collect();
        if changes.is_empty() {
            continue;
        }
        let from = mono_now();
        let net = u8::try_from(n + 1).expect("a few detection timeouts");
        match AssertUnwindSafe(compare(down_after, net, &changes))
            .catch_unwind()
            .await
        {
            Ok(mut c) => comparisons.append(&mut c),
            Err(p) => failures.push(format!(
                "vigil vs Sentinel with downAfter {down_after} ms: {}",
                panic_message(p)
            )),
        }
        load_by_part.push((
            format!("vigil vs Sentinel, downAfter {down_after} ms"),
            load.window(from, mono_now()),
        ));
    }

    let mut steps = Vec::new();
    if cfg.has("footprint") {
        for &scale in &cfg.scale {
            let count = format!("{} x {}", scale.replications, scale.instances);
            eprintln!("bench: operator footprint with {count} RedisReplications");
            let from = mono_now();
            match AssertUnwindSafe(footprint::step(scale, cfg.idle_seconds, cfg.batch))
                .catch_unwind()
                .await
            {
                Ok(step) => {
                    eprintln!("bench: {step:?}");
                    steps.push(step);
                }
                Err(p) => failures.push(format!(
                    "operator footprint with {count} RedisReplications: {}",
                    panic_message(p)
                )),
            }
            load_by_part.push((
                format!("footprint, {count} `RedisReplication`s"),
                load.window(from, mono_now()),
            ));
        }
    }

    let mut backup_section = String::new();
    if cfg.has("backup") {
        let mb = env_one("BENCH_BACKUP_MB", "100");
        let runs = env_one("BENCH_BACKUP_RUNS", "3");
        eprintln!("bench: backup and restore throughput, {mb} MB, {runs} runs");
        let from = mono_now();
        let mut figures = Vec::new();
        for compression in [true, false] {
            match AssertUnwindSafe(backup::measure(mb, runs, compression))
                .catch_unwind()
                .await
            {
                Ok(f) => figures.push(f),
                Err(p) => failures.push(format!("backup throughput: {}", panic_message(p))),
            }
        }
        if !figures.is_empty() {
            backup_section = backup::section(&figures);
        }
        load_by_part.push((
            "backup and restore".to_string(),
            load.window(from, mono_now()),
        ));
    }

    let now = jiff::Timestamp::now();
    let date = now.to_zoned(jiff::tz::TimeZone::UTC).date().to_string();
    let total_seconds = std::env::var("BENCH_STARTED_AT")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .map(|t0| (now.as_second() - t0) as f64);
    let report = Report {
        date: date.clone(),
        machine,
        runs: cfg.runs,
        switchover_runs: cfg.switchover_runs,
        comparisons,
        footprint: steps,
        failures,
        load: load.window(started, mono_now()),
        load_by_part,
        measuring_seconds: mono_now() - started,
        total_seconds,
        idle_seconds: cfg.idle_seconds,
    };
    let text = report.markdown() + &backup_section;
    let out = cfg.out.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("bench/results/{date}.md"))
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("results directory");
    }
    std::fs::write(&out, &text).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    println!("{text}");
    println!("bench: results written to {}", out.display());

    // Single failed runs are in the report; a part with nothing measured fails `make bench`.
    let empty: Vec<String> = report
        .comparisons
        .iter()
        .filter(|c| c.vigil.runs.is_empty() || (c.change.both() && c.sentinel.runs.is_empty()))
        .map(|c| format!("{:?} with downAfter {} ms", c.change, c.down_after))
        .collect();
    assert!(
        report.failures.is_empty() && empty.is_empty(),
        "parts of the benchmark could not be measured (see the report): {:?} {empty:?}",
        report.failures
    );
}
