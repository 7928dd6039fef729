//! The issues' targets, each with whether this run met it.

use super::{Comparison, Outcomes, Report, Target, median, ms, p90, percentile};
use crate::scenario::Change;

impl Report {
    pub(super) fn targets(&self) -> Vec<Target> {
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
}
