//! vigil under test: a `RedisReplication` of three instances on the local cluster's real node, its own
//! `vigil operator` (the e2e harness's: the chart's RBAC, failover cooldown 2 s), clients finding
//! the master through the operator's Sentinel endpoint.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use vigil::labels::SWITCHOVER_ANNOTATION;

use crate::scenario::{Instance, System};
use crate::support::{FAILOVER_COOLDOWN, TestNs, wait_for};
use crate::sys::Seen;

const NAME: &str = "cache";

pub struct VigilSet {
    pub t: TestNs,
    /// Their addresses change when a pod is replaced (`renew`).
    instances: Mutex<Vec<Instance>>,
    password: String,
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
        let mut instances = Vec::new();
        for pod in t.pod_names(NAME).await {
            let ip = t.pod_ip(&pod).await;
            instances.push(Instance { name: pod, ip });
        }
        let password = t.password(NAME).await;
        Self {
            t,
            instances: Mutex::new(instances),
            password,
        }
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
        if !ready || status.ready_instances != 3 || status.target_master.is_some() {
            return Err(format!("not settled: {status:?}"));
        }
        if let Some(last) = &status.last_failover {
            let since = last.time.0.duration_until(jiff::Timestamp::now());
            if since.unsigned_abs() <= FAILOVER_COOLDOWN + Duration::from_millis(500) {
                return Err(format!("last change {since:?} ago"));
            }
        }
        let master = status.current_master.ok_or("no master")?;
        let instances = self.instances();
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

    fn instances(&self) -> Vec<Instance> {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn artifacts(&self) -> PathBuf {
        self.t.env.artifacts.clone()
    }

    async fn wait_stable(&self) -> Instance {
        wait_for(
            "the vigil set to be settled",
            Duration::from_secs(120),
            || self.settled(),
        )
        .await
    }

    fn crash(&self, master: &Instance) {
        self.t.chaos(&master.name, crate::support::Chaos::Crash);
    }

    async fn switchover(&self, _master: &Instance, target: &Instance) {
        let patch = json!({"metadata": {"annotations": {SWITCHOVER_ANNOTATION: target.name}}});
        self.t
            .replications()
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("annotate {NAME} to switch over to {}: {e}", target.name));
    }

    async fn renew(&self, instance: &Instance) {
        let pods = self.t.pods();
        let old = pods
            .get(&instance.name)
            .await
            .unwrap_or_else(|e| panic!("get pod {}: {e}", instance.name));
        pods.delete(&instance.name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete pod {}: {e}", instance.name));
        // The operator recreates it under the same name; its address is new.
        let ip = wait_for(
            &format!("pod {} replaced and given an address", instance.name),
            Duration::from_secs(120),
            || async {
                let pod = pods.get(&instance.name).await.map_err(|e| e.to_string())?;
                if pod.uid() == old.uid() {
                    return Err("the old pod is still there".into());
                }
                pod.status
                    .and_then(|s| s.pod_ip)
                    .ok_or_else(|| "no address yet".to_string())
            },
        )
        .await;
        let mut instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = instances.iter_mut().find(|i| i.name == instance.name) {
            i.ip = ip;
        }
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
