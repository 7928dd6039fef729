//! The operator's footprint: resident memory and CPU of `vigil operator` (read from
//! /proc/<pid>/status and /proc/<pid>/stat) with 1, 10, 100 ... `RedisReplication`s of one
//! instance each, while it brings them up (reconciling) and afterwards (idle: it still
//! probes every instance each second), and the time until all are Ready.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil::api::RedisReplication;

use crate::support::{TestNs, wait_for};
use crate::sys::{clock_ticks, cmdline, cpu_ticks, mono_now, pids, rss_kib};

/// One scale step; memory in MiB, CPU in cores (1.0 = one core busy), times in seconds.
#[derive(Clone, Debug)]
pub struct Step {
    pub replications: usize,
    /// The operator started, nothing to manage yet.
    pub rss_empty: f64,
    pub ready_after: f64,
    pub rss_peak_reconciling: f64,
    pub cpu_reconciling: f64,
    pub rss_idle: f64,
    pub cpu_idle: f64,
    /// VmHWM at the end: the largest RSS the process ever had.
    pub rss_hwm: f64,
    /// Requests a second the apiserver served while idle, less what it served right after,
    /// with the operator stopped and the same pods running (the kubelet's and controllers'
    /// own traffic): the operator's share.
    pub api_requests_idle: f64,
}

/// Every request the apiserver has served so far (`apiserver_request_total`, all series).
async fn apiserver_requests(client: &kube::Client) -> f64 {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a GET request");
    let text = client
        .request_text(request)
        .await
        .expect("the apiserver's /metrics");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Clone, Copy)]
struct Sample {
    at: f64,
    rss_kib: u64,
    ticks: u64,
}

/// Samples a process every 250 ms until dropped.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
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
        Self { samples, task }
    }

    /// Peak RSS (MiB) and average CPU (cores) between `from` and `to`.
    fn window(&self, from: f64, to: f64) -> (f64, f64, f64) {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let inside: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .collect();
        let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
            return (0.0, 0.0, 0.0);
        };
        let peak = inside.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let span = last.at - first.at;
        let cpu = if span > 0.0 {
            (last.ticks - first.ticks) as f64 / clock_ticks() / span
        } else {
            0.0
        };
        (peak, cpu, last.rss_kib as f64 / 1024.0)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The operator process of namespace `ns` (started by the harness), and its health address.
fn find_operator(ns: &str) -> Option<(u32, String)> {
    pids().into_iter().find_map(|pid| {
        let args = cmdline(pid);
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
        };
        let is_ours = args.first().is_some_and(|a| a.ends_with("/vigil"))
            && args.get(1).map(String::as_str) == Some("operator")
            && value("--namespace").map(String::as_str) == Some(ns);
        is_ours.then(|| (pid, value("--health-addr").cloned().unwrap_or_default()))
    })
}

/// `GET /readyz` answered 200.
async fn ready(addr: &str) -> Result<(), String> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        let status = reply.lines().next().unwrap_or("").to_string();
        if status.contains(" 200") {
            Ok(())
        } else {
            Err(status)
        }
    };
    tokio::time::timeout(Duration::from_secs(2), work)
        .await
        .map_err(|_| "no answer".to_string())?
}

/// Measures one step: a fresh namespace and operator, `count` replications created at once.
pub async fn step(count: usize, idle_seconds: u64) -> Step {
    let mut t = TestNs::new(&format!("bench-fp{count}")).await;
    t.start_operator();
    let (pid, health) = wait_for("the operator process", Duration::from_secs(30), || async {
        find_operator(&t.name).ok_or_else(|| "not found".to_string())
    })
    .await;
    wait_for("the operator ready", Duration::from_secs(60), || {
        ready(&health)
    })
    .await;
    let sampler = Sampler::start(pid);
    let t0 = mono_now();
    // A short look at the operator with nothing to manage yet (ready: its caches are synced).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, _, rss_empty) = sampler.window(t0, mono_now());

    let created = mono_now();
    let names: Vec<String> = (0..count).map(|i| format!("r{i:03}")).collect();
    futures::future::join_all(names.iter().map(|n| {
        t.create_replication(
            n,
            json!({"instances": 1, "failover": {"downAfterMilliseconds": 5000}}),
        )
    }))
    .await;
    let api: Api<RedisReplication> = t.replications();
    let timeout = Duration::from_secs(120 + 4 * count as u64);
    wait_for(
        &format!("{count} RedisReplications Ready"),
        timeout,
        || async {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready = list
                .items
                .iter()
                .filter(|rr| {
                    rr.status.as_ref().is_some_and(|s| {
                        s.ready_instances == 1
                            && s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count();
            if ready == count {
                Ok(())
            } else {
                Err(format!("{ready} of {count} Ready"))
            }
        },
    )
    .await;
    let all_ready = mono_now();
    let (rss_peak_reconciling, cpu_reconciling, _) = sampler.window(created, all_ready);

    // Steady state: a short settle (status writes of the last ones), then the idle window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_from = mono_now();
    let requests_from = apiserver_requests(&t.admin).await;
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let requests_to = apiserver_requests(&t.admin).await;
    let idle_to = mono_now();
    let rate_idle = (requests_to - requests_from) / (idle_to - idle_from);
    let (_, cpu_idle, rss_idle) = sampler.window(idle_from, idle_to);
    let rss_hwm = rss_kib(pid)
        .map(|(_, hwm)| hwm as f64 / 1024.0)
        .unwrap_or(0.0);
    drop(sampler);

    // The same window with the operator stopped and its pods still running.
    t.stop_operator();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let without_from = (mono_now(), apiserver_requests(&t.admin).await);
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let rate_without =
        (apiserver_requests(&t.admin).await - without_from.1) / (mono_now() - without_from.0);
    let api_requests_idle = (rate_idle - rate_without).max(0.0);

    // Leave nothing running for the next step: delete the namespace and wait until it (and so
    // every pod of it) is gone.
    let ns = t.name.clone();
    let admin = t.admin.clone();
    drop(t);
    let namespaces: Api<Namespace> = Api::all(admin);
    wait_for(
        &format!("namespace {ns} deleted"),
        Duration::from_secs(300),
        || async {
            match namespaces.get_opt(&ns).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;

    Step {
        replications: count,
        rss_empty,
        ready_after: all_ready - created,
        rss_peak_reconciling,
        cpu_reconciling,
        rss_idle,
        cpu_idle,
        rss_hwm,
        api_requests_idle,
    }
}
