//! vigil under test: a `RedisReplication` of three instances on the local cluster's real node, its own
//! `vigil operator` (the e2e harness's: the chart's RBAC, failover cooldown 2 s), clients finding
//! the master through the operator's Sentinel endpoint.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::jiff;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use vigil::labels::SWITCHOVER_ANNOTATION;

use crate::scenario::{Instance, System};
use crate::support::partition::Cut;
use crate::support::{FAILOVER_COOLDOWN, TestNs, wait_for};
use crate::sys::{Seen, rule};

const NAME: &str = "cache";

pub struct VigilSet {
    pub t: TestNs,
    password: String,
    /// Rolling updates so far: each sets a new CPU request.
    rolls: AtomicUsize,
}

impl VigilSet {
    /// A namespace with its operator and a Ready `RedisReplication` of three.
    pub async fn start(prefix: &str, down_after: u64) -> Self {
        let mut t = TestNs::new(prefix).await;
        t.start_operator();
        t.create_replication(
            NAME,
            // The Redis variant of the server image: the Sentinel side runs the same Redis.
            json!({"instances": 3, "image": format!("{}-redis", vigil::api::DEFAULT_IMAGE),
                "failover": {"downAfterMilliseconds": down_after}}),
        )
        .await;
        t.wait_ready(NAME, 3, Duration::from_secs(180)).await;
        let password = t.password(NAME).await;
        Self {
            t,
            password,
            rolls: AtomicUsize::new(0),
        }
    }

    /// The instance pods that have an address now.
    async fn current(&self) -> Vec<Instance> {
        let selector = ListParams::default().labels(&format!("redis.vigil.dev/replication={NAME}"));
        let pods = self.t.pods().list(&selector).await;
        let mut out: Vec<Instance> = pods
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                let ip = p.status.as_ref()?.pod_ip.clone()?;
                Some(Instance {
                    name: p.name_any(),
                    ip,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The master once the set is Ready, no change is in progress and the failover cooldown
    /// (counted from the last change the status records) has passed.
    async fn settled(&self) -> Result<Instance, String> {
        let rr = self
            .t
            .replications()
            .get(NAME)
            .await
            .map_err(|e| e.to_string())?;
        if rr.annotations().contains_key(SWITCHOVER_ANNOTATION) {
            return Err("a switchover request is pending".into());
        }
        let status = rr.status.ok_or("no status")?;
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready
            || status.ready_instances != 3
            || status.updated_instances != 3
            || status.target_master.is_some()
        {
            return Err(format!("not settled: {status:?}"));
        }
        if let Some(last) = &status.last_failover {
            let since = last.time.0.duration_until(jiff::Timestamp::now());
            if since.unsigned_abs() <= FAILOVER_COOLDOWN + Duration::from_millis(500) {
                return Err(format!("last change {since:?} ago"));
            }
        }
        let master = status.current_master.ok_or("no master")?;
        let instances = self.current().await;
        if instances.len() != 3 {
            return Err(format!("instances {instances:?}"));
        }
        let master = instances
            .iter()
            .find(|i| i.name == master)
            .ok_or(format!("unknown master {master}"))?
            .clone();
        for i in &instances {
            let seen = Seen::of(&i.ip, &self.password).await;
            let ok = if i.ip == master.ip {
                seen == Seen::Master
            } else {
                seen.follows(&master.ip)
            };
            if !ok {
                return Err(format!("{}: {seen:?}", i.name));
            }
        }
        Ok(master)
    }
}

impl System for VigilSet {
    fn label(&self) -> &'static str {
        "vigil"
    }

    fn endpoints(&self) -> String {
        format!("127.0.0.1:{}", self.t.sentinel_port())
    }

    fn master_name(&self) -> String {
        format!("{}.{NAME}", self.t.name)
    }

    fn password(&self) -> String {
        self.password.clone()
    }

    async fn instances(&self) -> Vec<Instance> {
        self.current().await
    }

    fn artifacts(&self) -> PathBuf {
        self.t.env.artifacts.clone()
    }

    async fn stable(&self) -> Result<Instance, String> {
        self.settled().await
    }

    fn crash(&self, master: &Instance) {
        self.t.chaos(&master.name, crate::support::Chaos::Crash);
    }

    fn freeze(&self, master: &Instance) {
        self.t.chaos(&master.name, crate::support::Chaos::Freeze);
    }

    fn resume(&self, master: &Instance) {
        self.t.chaos(&master.name, crate::support::Chaos::Resume);
    }

    fn cut_off(&self, master: &Instance) -> Cut {
        // Inside the pod's network namespace, every packet in or out but on its own loopback and
        // the kubelet's probes of the agent: a partitioned node's kubelet still probes its pods.
        // The node's clients, the operator and the kubelet all come from the node's address;
        // only the kubelet asks the agent's port, so that is what tells them apart.
        let port = vigil::resources::AGENT_PORT.to_string();
        let rules = vec![
            rule("INPUT", &["-i", "lo"], "ACCEPT"),
            rule("INPUT", &["-p", "tcp", "--dport", &port], "ACCEPT"),
            rule("INPUT", &[], "DROP"),
            rule("OUTPUT", &["-o", "lo"], "ACCEPT"),
            rule("OUTPUT", &["-p", "tcp", "--sport", &port], "ACCEPT"),
            rule("OUTPUT", &[], "DROP"),
        ];
        Cut::insert(Some(self.t.sandbox_pid(&master.name)), rules)
    }

    async fn switchover(&self, _master: &Instance, target: &Instance) {
        let patch = json!({"metadata": {"annotations": {SWITCHOVER_ANNOTATION: target.name}}});
        self.t
            .replications()
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("annotate {NAME} to switch over to {}: {e}", target.name));
    }

    async fn switch_to(&self, master: &Instance, target: &Instance) {
        // vigil's switchover goes to the replica asked for.
        self.switchover(master, target).await;
    }

    async fn delete(&self, master: &Instance) {
        // The default: the pod's grace period, as `kubectl delete pod`.
        self.t
            .pods()
            .delete(&master.name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete pod {}: {e}", master.name));
    }

    async fn renew(&self, instance: &Instance) {
        let pods = self.t.pods();
        let old = pods
            .get(&instance.name)
            .await
            .unwrap_or_else(|e| panic!("get pod {}: {e}", instance.name));
        self.delete(instance).await;
        // The operator recreates it under the same name, with a new address (`current` reads it).
        wait_for(
            &format!("pod {} replaced and given an address", instance.name),
            Duration::from_secs(120),
            || async {
                let pod = pods.get(&instance.name).await.map_err(|e| e.to_string())?;
                if pod.uid() == old.uid() {
                    return Err("the old pod is still there".into());
                }
                pod.status
                    .and_then(|s| s.pod_ip)
                    .map(|_| ())
                    .ok_or_else(|| "no address yet".to_string())
            },
        )
        .await;
    }

    async fn roll(&self) {
        // A new pod spec the node can run (every image it has is imported, none pulled): a new
        // CPU request each time, which the operator rolls out pod by pod.
        let n = self.rolls.fetch_add(1, Ordering::Relaxed) + 1;
        let cpu = format!("{}m", 10 + n);
        self.t
            .patch_spec(NAME, json!({"resources": {"requests": {"cpu": cpu}}}))
            .await;
    }

    async fn names_master(&self, master_ip: &str) -> Result<(), String> {
        let rr = self
            .t
            .replications()
            .get(NAME)
            .await
            .map_err(|e| e.to_string())?;
        if rr.annotations().contains_key(SWITCHOVER_ANNOTATION) {
            return Err("switchover request still pending".into());
        }
        let status = rr.status.ok_or("no status")?;
        let want = format!("{master_ip}:6379");
        if status.master_address.as_deref() == Some(want.as_str()) && status.target_master.is_none()
        {
            Ok(())
        } else {
            Err(format!(
                "masterAddress {:?}, targetMaster {:?}",
                status.master_address, status.target_master
            ))
        }
    }
}
