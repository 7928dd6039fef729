//! The operator's footprint: resident memory and CPU of `vigil operator` (read from
//! /proc/<pid>/status and /proc/<pid>/stat) with N `RedisReplication`s of K instances each,
//! while it brings them up (reconciling) and afterwards (idle: it still probes every instance
//! each second), the time until all are Ready, and the apiserver requests it sends while idle.
//! Beside it, in the same idle window, one stock `redis-sentinel` watches the same masters with
//! the same down-after (watcher.rs): the peer the idle CPU is compared with.

mod sampler;
mod table;
mod watcher;

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil::api::RedisReplication;

use crate::support::{TestNs, wait_for};
use crate::sys::{cmdline, mono_now, pids};
use sampler::{OPERATOR_FLOW, Requests, Sampler, Window, operator_share};
pub use table::{section, targets};
use watcher::{Watched, Watcher};

/// The detection timeout of every replication, and of the sentinel watching them.
const DOWN_AFTER_MS: u64 = 5000;

/// One scale step: `replications` of `instances` each (`BENCH_SCALE` entries `N` or `NxK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub replications: usize,
    pub instances: usize,
}

impl std::str::FromStr for Scale {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, k) = s.split_once('x').unwrap_or((s, "1"));
        Ok(Self {
            replications: n.trim().parse()?,
            instances: k.trim().parse()?,
        })
    }
}

/// One scale step's figures; memory in MiB, CPU in cores (1.0 = one core busy), times in s.
#[derive(Clone, Debug)]
pub struct Step {
    pub scale: Scale,
    /// Replications created at a time.
    pub batch: usize,
    /// The operator started, nothing to manage yet.
    pub rss_empty: f64,
    pub ready_after: f64,
    /// Where that time went: until the operator had created the last pod, and until the node
    /// had the last one Ready (from the pods' own timestamps, whole seconds).
    pub pods_created_after: f64,
    pub pods_ready_after: f64,
    pub reconciling: Window,
    pub idle: Window,
    /// VmHWM at the end: the largest RSS the process ever had.
    pub rss_hwm: f64,
    /// Requests a second the apiserver dispatched for the operator while idle (its own
    /// FlowSchema); and by verb and resource, what the apiserver served while idle less what it
    /// served right after with the operator stopped and the same pods and sentinel running.
    pub api_requests_idle: f64,
    pub api_requests_by_kind: Vec<(String, f64)>,
    /// The sentinel: from its start until it watched every master and its replicas, and idle
    /// in the operator's idle window.
    pub sentinel_watching_after: f64,
    pub sentinel_starting: Window,
    pub sentinel_idle: Window,
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

/// Waits until `count` replications of `scale` are Ready with every instance ready.
async fn all_ready(t: &TestNs, scale: Scale, count: usize) {
    let api: Api<RedisReplication> = t.replications();
    let timeout = Duration::from_secs(120 + 4 * (scale.replications * scale.instances) as u64);
    wait_for(
        &format!("{count} RedisReplications of {} Ready", scale.instances),
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
                        s.ready_instances == scale.instances as i32
                            && s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count();
            if ready >= count {
                Ok(())
            } else {
                Err(format!("{ready} of {count} Ready"))
            }
        },
    )
    .await;
}

/// Seconds from `since` (wall clock) until the last pod was created, and until the last one
/// turned Ready.
async fn pod_times(t: &TestNs, since: k8s_openapi::jiff::Timestamp) -> (f64, f64) {
    let pods = t
        .pods()
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items;
    let after = |at: &k8s_openapi::jiff::Timestamp| (*at - since).get_seconds() as f64;
    let created = pods
        .iter()
        .filter_map(|p| p.metadata.creation_timestamp.as_ref())
        .map(|at| after(&at.0))
        .fold(0.0, f64::max);
    let ready = pods
        .iter()
        .filter_map(|p| {
            p.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")?
                .last_transition_time
                .clone()
        })
        .map(|at| after(&at.0))
        .fold(0.0, f64::max);
    (created, ready)
}

/// A FlowSchema matching the operator's ServiceAccount (tests/local-cluster.sh: `vigil` in
/// `vigil-system`), with the priority level its requests get without it, so that the apiserver
/// counts them apart from the kubelet's, the controllers' and the benchmark's own.
async fn operator_flow(admin: &kube::Client) {
    let gvk = GroupVersionKind::gvk("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema");
    let api: Api<DynamicObject> = Api::all_with(admin.clone(), &ApiResource::from_gvk(&gvk));
    let schema = json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": OPERATOR_FLOW},
        "spec": {
            "matchingPrecedence": 1000,
            "priorityLevelConfiguration": {"name": "workload-low"},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{
                    "kind": "ServiceAccount",
                    "serviceAccount": {"name": "vigil", "namespace": "vigil-system"},
                }],
                "resourceRules": [{
                    "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                    "clusterScope": true, "namespaces": ["*"],
                }],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        },
    });
    api.patch(
        OPERATOR_FLOW,
        &PatchParams::apply("vigil-bench").force(),
        &Patch::Apply(&schema),
    )
    .await
    .unwrap_or_else(|e| panic!("apply FlowSchema {OPERATOR_FLOW}: {e}"));
}

/// Every replication's master, its address and password, for the sentinel (read once).
async fn masters(t: &TestNs) -> Vec<Watched> {
    let rrs = t
        .replications()
        .list(&ListParams::default())
        .await
        .expect("list RedisReplications");
    let ips: HashMap<String, String> = t
        .pods()
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|p: Pod| Some((p.metadata.name?, p.status?.pod_ip?)))
        .collect();
    let passwords: HashMap<String, String> = Api::<Secret>::namespaced(t.admin.clone(), &t.name)
        .list(&ListParams::default())
        .await
        .expect("list Secrets")
        .items
        .into_iter()
        .filter_map(|s| {
            let password = s.data?.get("password")?.0.clone();
            Some((s.metadata.name?, String::from_utf8(password).ok()?))
        })
        .collect();
    rrs.items
        .iter()
        .map(|rr| {
            let name = rr.metadata.name.clone().expect("a name");
            let master = rr
                .status
                .as_ref()
                .and_then(|s| s.current_master.clone())
                .unwrap_or_else(|| panic!("{name}: Ready without a current master"));
            Watched {
                ip: ips[&master].clone(),
                password: passwords[&format!("{name}-auth")].clone(),
                name,
            }
        })
        .collect()
}

/// Measures one step: a fresh namespace and operator, the replications created `batch` at a
/// time, each batch once the one before is Ready (all at once when `batch` is 0).
pub async fn step(scale: Scale, idle_seconds: u64, batch: usize) -> Step {
    let mut t = TestNs::new(&format!(
        "bench-fp{}x{}",
        scale.replications, scale.instances
    ))
    .await;
    operator_flow(&t.admin).await;
    let requests_before = Requests::read(&t.admin).await;
    t.start_operator();
    let (pid, health) = wait_for("the operator process", Duration::from_secs(30), || async {
        find_operator(&t.name).ok_or_else(|| "not found".to_string())
    })
    .await;
    wait_for("the operator ready", Duration::from_secs(60), || {
        ready(&health)
    })
    .await;
    let operator = Sampler::start(pid);
    let t0 = mono_now();
    // A short look at the operator with nothing to manage yet (ready: its caches are synced).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_empty = operator.window(t0, mono_now()).rss_last;

    let created = mono_now();
    let created_wall = k8s_openapi::jiff::Timestamp::now();
    let names: Vec<String> = (0..scale.replications)
        .map(|i| format!("r{i:04}"))
        .collect();
    let spec = json!({
        "instances": scale.instances,
        "failover": {"downAfterMilliseconds": DOWN_AFTER_MS},
    });
    // One 2-core node starting a thousand pods at once thrashed (load average 770, the CRI
    // calls timing out): batches keep the node within what it can start.
    let batch = if batch == 0 { names.len() } else { batch };
    let mut count = 0;
    for chunk in names.chunks(batch.max(1)) {
        futures::future::join_all(chunk.iter().map(|n| t.create_replication(n, spec.clone())))
            .await;
        count += chunk.len();
        all_ready(&t, scale, count).await;
    }
    let ready_after = mono_now() - created;
    let reconciling = operator.window(created, mono_now());
    let (pods_created_after, pods_ready_after) = pod_times(&t, created_wall).await;

    let watched = masters(&t).await;
    let started = mono_now();
    let sentinel = Watcher::start(
        &t.env.artifacts.join(format!("{}-sentinel", t.name)),
        &watched,
        DOWN_AFTER_MS,
    );
    let sentinel_sampler = Sampler::start(sentinel.pid);
    wait_for(
        "the sentinel watching every master",
        Duration::from_secs(60 + scale.replications as u64 / 5),
        || sentinel.watching(watched.len(), scale.instances - 1),
    )
    .await;
    let sentinel_watching_after = mono_now() - started;
    let sentinel_starting = sentinel_sampler.window(started, mono_now());

    // Steady state: a short settle (status writes of the last ones), then the idle window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_from = mono_now();
    let requests_from = Requests::read(&t.admin).await;
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let requests_to = Requests::read(&t.admin).await;
    let idle_to = mono_now();
    let idle = operator.window(idle_from, idle_to);
    let sentinel_idle = sentinel_sampler.window(idle_from, idle_to);
    let rss_hwm = operator.high_water();
    drop(operator);
    drop(sentinel_sampler);
    // A FlowSchema that matched nothing would read as an operator sending no requests.
    assert!(
        requests_to.operator > requests_before.operator,
        "the apiserver dispatched none of the operator's requests under FlowSchema \
         {OPERATOR_FLOW}: it does not match the operator's ServiceAccount"
    );
    let api_requests_idle = requests_to.operator_rate_since(&requests_from);

    // The same window with the operator stopped, its pods and the sentinel still running: what
    // the rest of the cluster asks meanwhile, to break the operator's requests down by kind.
    t.stop_operator();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let without_from = Requests::read(&t.admin).await;
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let rate_without = Requests::read(&t.admin).await.rate_since(&without_from);
    sentinel.stop().await;
    let api_requests_by_kind =
        operator_share(&requests_to.rate_since(&requests_from), &rate_without);

    // Leave nothing running for the next step: delete the namespace and wait until it (and so
    // every pod of it) is gone.
    let ns = t.name.clone();
    let admin = t.admin.clone();
    drop(t);
    let namespaces: Api<Namespace> = Api::all(admin);
    wait_for(
        &format!("namespace {ns} deleted"),
        Duration::from_secs(300 + (scale.replications * scale.instances) as u64 / 2),
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
        scale,
        batch,
        rss_empty,
        ready_after,
        pods_created_after,
        pods_ready_after,
        reconciling,
        idle,
        rss_hwm,
        api_requests_idle,
        api_requests_by_kind,
        sentinel_watching_after,
        sentinel_starting,
        sentinel_idle,
    }
}

#[cfg(test)]
mod tests {
    use super::Scale;

    #[test]
    fn a_scale_is_a_count_or_count_x_instances() {
        let s = |r, i| Scale {
            replications: r,
            instances: i,
        };
        assert_eq!("100".parse::<Scale>().ok(), Some(s(100, 1)));
        assert_eq!("300x3".parse::<Scale>().ok(), Some(s(300, 3)));
        assert!("x3".parse::<Scale>().is_err());
    }
}
