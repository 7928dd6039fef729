//! One comparison's table, and its runs one by one.

use std::fmt::Write as _;

use super::{Comparison, Outcomes, Report, median, ms, p90, ratio};
use crate::scenario::{Change, Run};

impl Report {
    pub(super) fn comparison_table(&self, o: &mut String, c: &Comparison) {
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
                format!(
                    "{what} → a replica seen promoted (by the benchmark's poll: up to a poll late)"
                ),
                Box::new(|r| r.promoted),
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

    pub(super) fn raw_runs(&self, o: &mut String, c: &Comparison) {
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
             | Gap plain | Gap `WAIT 1` | First write | Promoted | Other replica | Every replica \
             | Lost plain | Lost `WAIT 1` | Promotions |\n|---|---|---|---|---|---|---|---|---|---|---|---|",
            c.down_after
        );
        for (label, out) in [("vigil", &c.vigil), ("Sentinel", &c.sentinel)] {
            for (n, r) in out.runs.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "| {label} | {} | {} → {} | {} | {} | {} | {} | {} | {} | {}/{} | {}/{} | {} |",
                    n + 1,
                    r.from,
                    r.to,
                    ms(r.gap_plain),
                    ms(r.gap_wait),
                    ms(r.to_first_write),
                    ms(r.promoted),
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
