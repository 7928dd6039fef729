//! The footprint's part of the result file: its targets (issue 13) and its tables.

use std::fmt::Write;

use super::Step;
use crate::report::Target;

/// Issue 13: idle CPU no more than one sentinel's watching the same instances, few apiserver
/// requests, memory, and how soon a burst of new replications is Ready.
pub fn targets(steps: &[Step]) -> Vec<Target> {
    let mut targets = Vec::new();
    for s in steps {
        let ratio = s.idle.cpu / s.sentinel_idle.cpu.max(1e-6);
        targets.push(Target {
            what: format!(
                "Idle operator CPU <= 1.0 x one `redis-sentinel` watching the same {} instances",
                s.scale.replications * s.scale.instances
            ),
            measured: format!(
                "{:.4} vs {:.4} cores: {ratio:.2}",
                s.idle.cpu, s.sentinel_idle.cpu
            ),
            met: Some(ratio <= 1.0),
        });
    }
    let worst = steps.iter().map(per_replication).reduce(f64::max);
    targets.push(Target {
        what: "apiserver requests while idle <= 0.1 /s per replication (every step)".into(),
        measured: worst.map_or("no step measured".into(), |w| format!("at most {w:.3}")),
        met: worst.map(|w| w <= 0.1),
    });
    let largest = steps.iter().max_by_key(|s| s.scale.replications);
    targets.push(match largest {
        Some(s) => {
            let peak = peak_rss(s);
            let at = s.scale.replications;
            Target {
                what: "Operator memory <= 64 MiB with 1,000 `RedisReplication`s".into(),
                measured: format!(
                    "{peak:.1} MiB peak (VmHWM) at {at}{}",
                    if at < 1000 {
                        " (the most measured)"
                    } else {
                        ""
                    }
                ),
                met: (at >= 1000).then_some(peak <= 64.0),
            }
        }
        None => not_measured("Operator memory <= 64 MiB with 1,000 `RedisReplication`s"),
    });
    for (count, bound) in [(100, 10.0), (1000, 90.0)] {
        let what = format!("{count} `RedisReplication`s all Ready <= {bound:.0} s");
        let step = steps
            .iter()
            .find(|s| s.scale.replications == count && s.scale.instances == 1);
        targets.push(match step {
            Some(s) => Target {
                what,
                measured: format!("{:.1} s", s.ready_after),
                met: Some(s.ready_after <= bound),
            },
            None => not_measured(&what),
        });
    }
    targets
}

fn not_measured(what: &str) -> Target {
    Target {
        what: what.into(),
        measured: "not measured".into(),
        met: None,
    }
}

fn per_replication(s: &Step) -> f64 {
    s.api_requests_idle / s.scale.replications.max(1) as f64
}

fn peak_rss(s: &Step) -> f64 {
    s.reconciling.rss_peak.max(s.idle.rss_peak).max(s.rss_hwm)
}

/// The section: how it is measured, the operator's table, and the operator beside the sentinel.
pub fn section(steps: &[Step], idle_seconds: u64) -> String {
    let mut o = String::from("## The operator's footprint\n\n");
    if steps.is_empty() {
        o.push_str("Not measured in this run.\n\n");
        return o;
    }
    let _ = writeln!(
        o,
        "`vigil operator` (one process, its own namespace), N `RedisReplication`s of K \
         instances (N x K) created {batch} at a time (the next batch once those are Ready: one \
         2-core node starting a thousand pods at once thrashes), `downAfterMilliseconds` {down} \
         ms, pods on the node. \
         RSS from `/proc/<pid>/status`, CPU from `/proc/<pid>/stat` (1.00 = one core busy). \
         *Reconciling*: from creating them until all are Ready; *idle*: nothing changing, a \
         {idle_seconds} s window starting 5 s after all are Ready and the sentinel watches \
         every master (the operator still probes every instance each second). *apiserver \
         requests idle*: the requests a second the apiserver dispatched over the idle window \
         under a FlowSchema matching the operator's ServiceAccount only \
         (`apiserver_flowcontrol_dispatched_requests_total`): the operator's own requests. \
         *Last pod created, Ready*: from creating the \
         replications until the last pod's `creationTimestamp` (the operator's part) and its \
         Ready condition (the node's), in whole seconds.\n\n\
         The peer: one `redis-sentinel` 7.0.15 started once all are Ready, monitoring every \
         replication's master (`sentinel monitor` with quorum 1, the same down-after, the \
         master's password as `auth-pass`), finding the replicas itself; measured in the same \
         idle window. *Watching*: from its start until `SENTINEL MASTERS` shows every master \
         up with all its replicas.\n",
        down = super::DOWN_AFTER_MS,
        batch = steps[0].batch
    );
    let _ = writeln!(
        o,
        "| N x K | Time until all Ready (s) | last pod created, Ready (s) | RSS, nothing to manage (MiB) | RSS peak \
         reconciling (MiB) | CPU reconciling (cores) | RSS idle (MiB) | CPU idle (cores) | \
         VmHWM (MiB) | apiserver requests idle (/s, per replication) |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for s in steps {
        let _ = writeln!(
            o,
            "| {} x {} | {:.1} | {:.0}, {:.0} | {:.1} | {:.1} | {:.3} | {:.1} | {:.4} | {:.1} | {:.2} \
             ({:.4}) |",
            s.scale.replications,
            s.scale.instances,
            s.ready_after,
            s.pods_created_after,
            s.pods_ready_after,
            s.rss_empty,
            s.reconciling.rss_peak,
            s.reconciling.cpu,
            s.idle.rss_last,
            s.idle.cpu,
            s.rss_hwm,
            s.api_requests_idle,
            per_replication(s)
        );
    }
    let _ = writeln!(
        o,
        "\n| N x K | operator CPU idle | sentinel CPU idle | operator / sentinel | operator RSS \
         idle (MiB) | sentinel RSS idle (MiB) | sentinel watching after (s) | sentinel CPU \
         until watching |\n|---|---|---|---|---|---|---|---|"
    );
    for s in steps {
        let _ = writeln!(
            o,
            "| {} x {} | {:.4} | {:.4} | {:.2} | {:.1} | {:.1} | {:.1} | {:.3} |",
            s.scale.replications,
            s.scale.instances,
            s.idle.cpu,
            s.sentinel_idle.cpu,
            s.idle.cpu / s.sentinel_idle.cpu.max(1e-6),
            s.idle.rss_last,
            s.sentinel_idle.rss_last,
            s.sentinel_watching_after,
            s.sentinel_starting.cpu
        );
    }
    o.push_str(
        "\nThe operator's idle apiserver requests by kind (requests a second; \
         `apiserver_request_total` over the idle window less over as long a window right after, \
         with the operator stopped and the pods and sentinel still running):\n\n",
    );
    for s in steps {
        let kinds: Vec<String> = s
            .api_requests_by_kind
            .iter()
            .take(5)
            .map(|(k, v)| format!("`{k}` {v:.2}"))
            .collect();
        let _ = writeln!(
            o,
            "- {} x {}: {}",
            s.scale.replications,
            s.scale.instances,
            if kinds.is_empty() {
                "none".into()
            } else {
                kinds.join(", ")
            }
        );
    }
    o.push('\n');
    o
}
