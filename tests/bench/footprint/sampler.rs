//! Readings of one process over time (RSS and CPU from /proc, every 250 ms) and of the
//! apiserver's request counters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sys::{clock_ticks, cpu_ticks, mono_now, rss_kib};

/// The FlowSchema that sorts the operator's requests out from everyone else's (mod.rs creates
/// it): the apiserver counts what it dispatched under it, so the operator's rate is read, not
/// inferred.
pub const OPERATOR_FLOW: &str = "vigil-bench-operator";

/// The requests the apiserver has served so far (`apiserver_request_total`), by verb and
/// resource (with its subresource); those it dispatched for the operator
/// (`apiserver_flowcontrol_dispatched_requests_total` of [`OPERATOR_FLOW`]); and when it was read.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    pub at: f64,
    pub by_kind: BTreeMap<String, f64>,
    pub operator: f64,
}

impl Requests {
    pub async fn read(client: &kube::Client) -> Self {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("a GET request");
        let text = client
            .request_text(request)
            .await
            .expect("the apiserver's /metrics");
        let mut by_kind = BTreeMap::new();
        let mut operator = 0.0;
        for line in text.lines() {
            let Some((name, series)) = line.split_once('{') else {
                continue;
            };
            let Some((labels, value)) = series.rsplit_once("} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
                    .unwrap_or_default()
            };
            if name == "apiserver_flowcontrol_dispatched_requests_total" {
                if label("flow_schema") == OPERATOR_FLOW {
                    operator += value;
                }
                continue;
            }
            if name != "apiserver_request_total" {
                continue;
            }
            let (resource, sub) = (label("resource"), label("subresource"));
            let kind = match sub.as_str() {
                "" => format!("{} {resource}", label("verb")),
                _ => format!("{} {resource}/{sub}", label("verb")),
            };
            *by_kind.entry(kind).or_default() += value;
        }
        Self {
            at: mono_now(),
            by_kind,
            operator,
        }
    }

    /// The operator's requests a second from `earlier` to this reading.
    pub fn operator_rate_since(&self, earlier: &Self) -> f64 {
        (self.operator - earlier.operator) / (self.at - earlier.at).max(1e-3)
    }

    /// Requests a second from `earlier` to this reading, by kind.
    pub fn rate_since(&self, earlier: &Self) -> BTreeMap<String, f64> {
        let span = (self.at - earlier.at).max(1e-3);
        self.by_kind
            .iter()
            .map(|(k, v)| {
                let before = earlier.by_kind.get(k).copied().unwrap_or(0.0);
                (k.clone(), (v - before) / span)
            })
            .collect()
    }
}

/// The operator's share: the rates with it running less the rates without it, by kind, the
/// largest first (kinds it adds nothing to left out).
pub fn operator_share(
    with: &BTreeMap<String, f64>,
    without: &BTreeMap<String, f64>,
) -> Vec<(String, f64)> {
    let mut share: Vec<(String, f64)> = with
        .iter()
        .map(|(k, v)| (k.clone(), v - without.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.005)
        .collect();
    share.sort_by(|a, b| b.1.total_cmp(&a.1));
    share
}

#[derive(Clone, Copy)]
struct Sample {
    at: f64,
    rss_kib: u64,
    ticks: u64,
}

/// What a process did between two instants: memory in MiB, CPU in cores (1.0 = one core busy).
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub rss_peak: f64,
    pub rss_last: f64,
    pub cpu: f64,
}

/// Samples a process every 250 ms until dropped.
pub struct Sampler {
    pub pid: u32,
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(pid: u32) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                if let (Some((rss, _)), Some(ticks)) = (rss_kib(pid), cpu_ticks(pid)) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(Sample {
                        at: mono_now(),
                        rss_kib: rss,
                        ticks,
                    });
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { pid, samples, task }
    }

    pub fn window(&self, from: f64, to: f64) -> Window {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let inside: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .collect();
        let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
            return Window::default();
        };
        let span = last.at - first.at;
        Window {
            rss_peak: inside.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0,
            rss_last: last.rss_kib as f64 / 1024.0,
            cpu: if span > 0.0 {
                (last.ticks - first.ticks) as f64 / clock_ticks() / span
            } else {
                0.0
            },
        }
    }

    /// VmHWM: the largest RSS the process ever had (MiB).
    pub fn high_water(&self) -> f64 {
        rss_kib(self.pid).map_or(0.0, |(_, hwm)| hwm as f64 / 1024.0)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
