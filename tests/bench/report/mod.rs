//! Statistics and the markdown report.

mod machine;
mod notes;
mod tables;
mod targets;

use std::fmt::Write as _;

use crate::footprint::Step;
use crate::scenario::{Change, Run};
pub use machine::{LoadMonitor, machine};
use notes::{
    CRASH_NOTE, DELETE_NOTE, FREEZE_NOTE, METHOD, PARTITION_NOTE, REPEAT_CRASH_NOTE, ROLLING_NOTE,
    SENTINEL_AGAIN_NOTE, SWITCHOVER_NOTE,
};

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
}
