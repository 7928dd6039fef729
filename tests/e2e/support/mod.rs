//! Harness for the local control plane tier: a real kube-apiserver, kube-controller-manager and
//! the process-based kubelet stand-in, started by `tests/e2e.sh`, which passes their locations in
//! the environment. Each test gets its own namespace (enforcing the `restricted` Pod Security
//! Standard) and its own operator process, authenticated as the chart's ServiceAccount.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;
use vigil::api::{RedisReplication, RedisReplicationStatus};

/// Locations handed over by `tests/e2e.sh`.
pub struct Env {
    pub admin_kubeconfig: PathBuf,
    pub operator_kubeconfig: PathBuf,
    pub kubelet_state: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    pub redis_cli: PathBuf,
    pub artifacts: PathBuf,
}

fn required(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) => PathBuf::from(v),
        None => panic!(
            "{var} is not set: the e2e tests run on the local control plane; \
             start them with `make test` (or `tests/e2e.sh`)"
        ),
    }
}

impl Env {
    pub fn load() -> Self {
        Self {
            admin_kubeconfig: required("VIGIL_E2E_ADMIN_KUBECONFIG"),
            operator_kubeconfig: required("VIGIL_E2E_OPERATOR_KUBECONFIG"),
            kubelet_state: required("VIGIL_E2E_KUBELET_STATE"),
            kubectl: required("KUBECTL"),
            helm: required("HELM"),
            redis_cli: std::env::var_os("REDIS_CLI")
                .map(PathBuf::from)
                .unwrap_or_else(|| "redis-cli".into()),
            artifacts: required("VIGIL_E2E_ARTIFACTS"),
        }
    }
}

pub async fn client_from(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("client builds")
}

/// Polls `check` every 250 ms until it yields a value, or panics after `timeout` with `what`
/// and the last state `check` described.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(state) => last = state,
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A namespace of one test, with its own operator.
pub struct TestNs {
    pub env: Env,
    pub name: String,
    pub admin: Client,
    operator: Option<Child>,
}

impl TestNs {
    /// Creates `e2e-<prefix>-<random>` enforcing the restricted Pod Security Standard.
    pub async fn new(prefix: &str) -> Self {
        let env = Env::load();
        let admin = client_from(&env.admin_kubeconfig).await;
        let name = format!("e2e-{prefix}-{:04x}", rand::random::<u16>());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}
        }))
        .expect("namespace");
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        Self {
            env,
            name,
            admin,
            operator: None,
        }
    }

    /// Starts `vigil operator` for this namespace, as the chart's ServiceAccount.
    pub fn start_operator(&mut self) {
        let log_path = self
            .env
            .artifacts
            .join(format!("{}-operator.log", self.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args([
                "operator",
                "--namespace",
                &self.name,
                "--health-addr",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", &self.env.operator_kubeconfig)
            .env("RUST_LOG", "info,vigil=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start operator");
        self.operator = Some(child);
    }

    pub fn stop_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn replications(&self) -> Api<RedisReplication> {
        Api::namespaced(self.admin.clone(), &self.name)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.name)
    }

    pub async fn create_replication(&self, name: &str, spec: serde_json::Value) {
        let rr: RedisReplication = serde_json::from_value(json!({
            "apiVersion": "redis.vigil.dev/v1alpha1",
            "kind": "RedisReplication",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("replication");
        self.replications()
            .create(&PostParams::default(), &rr)
            .await
            .expect("create RedisReplication");
    }

    pub async fn set_instances(&self, name: &str, instances: i32) {
        self.replications()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"instances": instances}})),
            )
            .await
            .expect("scale RedisReplication");
    }

    pub async fn status(&self, name: &str) -> Option<RedisReplicationStatus> {
        self.replications()
            .get(name)
            .await
            .ok()
            .and_then(|rr| rr.status)
    }

    /// Waits for Ready=True with `instances` ready instances and a master recorded.
    pub async fn wait_ready(
        &self,
        name: &str,
        instances: i32,
        timeout: Duration,
    ) -> RedisReplicationStatus {
        wait_for(
            &format!("{name} Ready with {instances} instances"),
            timeout,
            || async {
                let rr = self
                    .replications()
                    .get(name)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = rr.status.clone().ok_or("no status")?;
                let ready = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let generation_seen = status.observed_generation == rr.metadata.generation;
                if ready
                    && generation_seen
                    && status.ready_instances == instances
                    && status.current_master.is_some()
                {
                    Ok(status)
                } else {
                    Err(format!("{status:?}"))
                }
            },
        )
        .await
    }

    pub async fn password(&self, name: &str) -> String {
        let secret = Api::<Secret>::namespaced(self.admin.clone(), &self.name)
            .get(&format!("{name}-auth"))
            .await
            .expect("auth secret");
        let bytes = secret.data.expect("data")["password"].0.clone();
        String::from_utf8(bytes).expect("utf-8 password")
    }

    pub async fn pod_ip(&self, pod: &str) -> String {
        let pod = self.pods().get(pod).await.expect("pod");
        pod.status.and_then(|s| s.pod_ip).expect("pod IP")
    }

    /// Ready endpoint addresses of a Service, from its EndpointSlices.
    pub async fn endpoint_addresses(&self, service: &str) -> BTreeSet<String> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.admin.clone(), &self.name);
        let list = slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
            .await
            .expect("list EndpointSlices");
        list.items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect()
    }

    pub async fn wait_endpoints(&self, service: &str, expected: BTreeSet<String>) {
        wait_for(
            &format!("endpoints of {service} to be {expected:?}"),
            Duration::from_secs(60),
            || async {
                let got = self.endpoint_addresses(service).await;
                if got == expected {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        )
        .await
    }

    pub async fn delete_pod(&self, pod: &str) {
        self.pods()
            .delete(pod, &DeleteParams::default())
            .await
            .expect("delete pod");
    }

    /// Pods of a replication by name.
    pub async fn pod_names(&self, replication: &str) -> BTreeSet<String> {
        self.pods()
            .list(
                &ListParams::default()
                    .labels(&format!("redis.vigil.dev/replication={replication}")),
            )
            .await
            .expect("list pods")
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect()
    }

    /// Runs redis-cli against `ip`; returns stdout, trimmed, or stderr as the error.
    pub fn redis_cli(&self, ip: &str, password: Option<&str>, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.env.redis_cli);
        cmd.args(["-h", ip, "-p", "6379", "--no-auth-warning"]);
        if let Some(pw) = password {
            cmd.args(["-a", pw]);
        }
        let out = cmd.args(args).output().expect("run redis-cli");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stdout.is_empty() { stderr } else { stdout }
    }

    /// A field of `INFO replication`.
    pub fn info_field(&self, ip: &str, password: &str, field: &str) -> Option<String> {
        let info = self.redis_cli(ip, Some(password), &["INFO", "replication"]);
        info.lines().find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{field}:"))
                .map(str::to_string)
        })
    }

    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.env.kubectl)
            .env("KUBECONFIG", &self.env.admin_kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.stop_operator();
        // Leave nothing running: deleting the namespace makes the kubelet stop its pods.
        let _ = Command::new(&self.env.kubectl)
            .env("KUBECONFIG", &self.env.admin_kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}
