//! What the clients saw in a partition scenario: writes taken, acknowledged and lost, the
//! windows in which two instances took writes, the longest time nothing took writes, and the
//! linearizability checker's verdict. One line per run goes to `$VIGIL_CHAOS_OUT`
//! (tab-separated) for `make chaos`'s table.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::partition::Sample;

/// How many times `make chaos` repeats each scenario (`VIGIL_CHAOS_RUNS`; 1 in `make test`).
pub fn runs() -> usize {
    std::env::var("VIGIL_CHAOS_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(1)
}

/// A stretch of consecutive writes one instance took: from the first's invocation to the last's
/// completion.
#[derive(Clone, Debug)]
pub struct Run {
    pub pod: String,
    pub from: Instant,
    pub to: Instant,
}

/// Per instance, the stretches in which every write it was sent was taken.
pub fn accepting_runs(samples: &[Sample]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut open: Vec<(String, Option<Run>)> = Vec::new();
    for s in samples {
        let slot = match open.iter().position(|(p, _)| *p == s.pod) {
            Some(i) => i,
            None => {
                open.push((s.pod.clone(), None));
                open.len() - 1
            }
        };
        let current = &mut open[slot].1;
        match (s.accepted, current.as_mut()) {
            (true, Some(run)) => run.to = s.completed,
            (true, None) => {
                *current = Some(Run {
                    pod: s.pod.clone(),
                    from: s.invoked,
                    to: s.completed,
                })
            }
            (false, _) => runs.extend(current.take()),
        }
    }
    runs.extend(open.into_iter().filter_map(|(_, r)| r));
    runs.sort_by_key(|r| r.from);
    runs
}

/// The windows in which two instances both took writes: pairs of runs of different instances
/// that overlap, and for how long.
pub fn split_brain(runs: &[Run]) -> Vec<(String, String, Duration)> {
    let mut windows = Vec::new();
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            if a.pod != b.pod && b.from < a.to && a.from < b.to {
                let overlap = a.to.min(b.to).saturating_duration_since(a.from.max(b.from));
                windows.push((a.pod.clone(), b.pod.clone(), overlap));
            }
        }
    }
    windows
}

/// The longest time from `from` on in which no instance took a write.
pub fn longest_unavailable(samples: &[Sample], from: Instant) -> Duration {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for s in samples.iter().filter(|s| s.accepted && s.invoked >= from) {
        gap = gap.max(s.completed.saturating_duration_since(last));
        last = last.max(s.completed);
    }
    gap
}

/// How long after `cut_at` the old master `old` still took writes before another instance took
/// one: the window the self-fence bounds (rule 9). `None` when it took none after the cut.
pub fn old_master_writes_for(samples: &[Sample], old: &str, cut_at: Instant) -> Option<Duration> {
    let after = |s: &&Sample| s.accepted && s.invoked >= cut_at;
    let successor = samples
        .iter()
        .filter(after)
        .filter(|s| s.pod != old)
        .map(|s| s.invoked)
        .min();
    samples
        .iter()
        .filter(after)
        .filter(|s| s.pod == old && successor.is_none_or(|n| s.completed <= n))
        .map(|s| s.completed.saturating_duration_since(cut_at))
        .max()
}

/// One run of a scenario.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: &'static str,
    pub writes: usize,
    pub accepted: usize,
    pub acknowledged: usize,
    pub lost_plain: usize,
    pub lost_acknowledged: usize,
    pub split_brain: Vec<(String, String, Duration)>,
    pub longest_unavailable: Duration,
    /// What Porcupine said of the history the clients recorded, if one was.
    pub linearizable: Option<bool>,
    /// And of the same history with the unconfirmed reads counted (`Some(None)`: undecided).
    pub with_unconfirmed_reads: Option<Option<bool>>,
    /// Where another instance became master: how long the old one took writes after the cut.
    pub old_master_writes_for: Option<Duration>,
}

impl Outcome {
    /// `present`: the keys of accepted writes that the final master holds.
    pub fn of(
        scenario: &'static str,
        samples: &[Sample],
        present: &HashSet<String>,
        cut_at: Instant,
    ) -> Self {
        let accepted: Vec<&Sample> = samples.iter().filter(|s| s.accepted).collect();
        let acknowledged: Vec<&String> = samples
            .iter()
            .filter(|s| s.acknowledged)
            .map(|s| &s.key)
            .collect();
        Self {
            scenario,
            writes: samples.len(),
            accepted: accepted.len(),
            acknowledged: acknowledged.len(),
            lost_plain: accepted
                .iter()
                .filter(|s| !present.contains(&s.key))
                .count(),
            lost_acknowledged: acknowledged
                .iter()
                .filter(|k| !present.contains(**k))
                .count(),
            split_brain: split_brain(&accepting_runs(samples)),
            longest_unavailable: longest_unavailable(samples, cut_at),
            linearizable: None,
            with_unconfirmed_reads: None,
            old_master_writes_for: None,
        }
    }

    /// Prints the run and appends it to `$VIGIL_CHAOS_OUT`.
    pub fn record(&self) {
        let longest_split = self
            .split_brain
            .iter()
            .map(|w| w.2)
            .max()
            .unwrap_or_default();
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.scenario,
            self.writes,
            self.accepted,
            self.acknowledged,
            self.lost_plain,
            self.lost_acknowledged,
            self.split_brain.len(),
            longest_split.as_millis(),
            self.longest_unavailable.as_millis(),
            verdict(self.linearizable),
            self.with_unconfirmed_reads.map_or("-", |v| match v {
                None => "?",
                Some(v) => verdict(Some(v)),
            }),
            self.old_master_writes_for
                .map_or("-".to_string(), |d| d.as_millis().to_string()),
        );
        eprintln!("chaos: {line}");
        if let Ok(path) = std::env::var("VIGIL_CHAOS_OUT") {
            use std::io::Write;
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                eprintln!("cannot append to {path}: {e}");
            }
        }
    }

    /// What every scenario must hold: no acknowledged write lost, never two instances taking
    /// writes at once.
    pub fn assert_safe(&self) {
        assert_eq!(
            self.lost_acknowledged, 0,
            "WAIT-acknowledged writes lost: {self:?}"
        );
        assert!(
            self.split_brain.is_empty(),
            "two instances took writes at the same time: {:?}",
            self.split_brain
        );
    }
}

/// A verdict in a row of the table: 1 linearizable, 0 not, - not checked.
fn verdict(v: Option<bool>) -> &'static str {
    match v {
        None => "-",
        Some(true) => "1",
        Some(false) => "0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pod: &str, at: Instant, ms: u64, accepted: bool) -> Sample {
        let invoked = at + Duration::from_millis(ms);
        Sample {
            pod: pod.into(),
            key: format!("{pod}:{ms}"),
            invoked,
            completed: invoked + Duration::from_millis(5),
            accepted,
            acknowledged: false,
        }
    }

    #[test]
    fn overlapping_stretches_of_two_instances_are_a_split_brain() {
        let t = Instant::now();
        let handover = [
            sample("a", t, 0, true),
            sample("a", t, 20, true),
            sample("a", t, 40, false),
            sample("b", t, 60, true),
            sample("b", t, 80, true),
        ];
        assert!(split_brain(&accepting_runs(&handover)).is_empty());
        assert_eq!(longest_unavailable(&handover, t), Duration::from_millis(40));
        let both = [
            sample("a", t, 0, true),
            sample("b", t, 10, true),
            sample("a", t, 20, true),
            sample("b", t, 30, false),
        ];
        let windows = split_brain(&accepting_runs(&both));
        assert_eq!(windows.len(), 1, "{windows:?}");
        assert_eq!(windows[0].2, Duration::from_millis(5));
    }

    #[test]
    fn the_old_masters_window_ends_where_the_new_master_begins() {
        let t = Instant::now();
        let cut = t + Duration::from_millis(10);
        let failover = [
            sample("a", t, 0, true),
            sample("a", t, 20, true),
            sample("a", t, 40, true),
            sample("a", t, 60, false),
            sample("b", t, 100, true),
            // Re-promoted later (flapping): not part of the window the fence bounds.
            sample("a", t, 200, true),
        ];
        assert_eq!(
            old_master_writes_for(&failover, "a", cut),
            Some(Duration::from_millis(35))
        );
        assert_eq!(old_master_writes_for(&failover[3..5], "a", cut), None);
    }
}
