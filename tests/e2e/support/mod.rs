//! Harness for the local cluster tier: a real kube-apiserver, kube-controller-manager and the real
//! node of `tests/node/` (kubelet, containerd, the images built from `images/`), started by
//! `tests/e2e.sh`, which passes their locations in the environment. Each test gets its own
//! namespace (enforcing the `restricted` Pod Security Standard) and, unless it tests the chart's
//! in-cluster operator, its own operator process, authenticated as the chart's ServiceAccount; it
//! runs in the node's network namespace, which routes to the pods. Chaos signals the pod's
//! container through the CRI. With `VIGIL_E2E_TARGET=kind`, `tests/kind/e2e.sh` passes a kind
//! cluster: the same, with chaos from the kind node.

pub mod clients;
pub mod history;
pub mod outcome;
pub mod partition;
pub mod s3;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;
use vigil::api::{RedisReplication, RedisReplicationStatus};

/// Locations handed over by `tests/e2e.sh` (or `tests/kind/e2e.sh`).
pub struct Env {
    pub admin_kubeconfig: PathBuf,
    pub operator_kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    pub redis_cli: PathBuf,
    pub artifacts: PathBuf,
    /// The cluster is kind, not the local control plane.
    pub kind: bool,
    /// crictl for chaos on the local real node (`VIGIL_E2E_TARGET=node`).
    pub crictl: Option<PathBuf>,
}

fn required(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) => PathBuf::from(v),
        None => panic!(
            "{var} is not set: the e2e tests run on the local control plane; \
             start them with `make test` (or `tests/e2e.sh`), or on kind with `tests/kind/e2e.sh`"
        ),
    }
}

/// Where the pods run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Target {
    /// The local control plane with the real node of `tests/node/`.
    Node,
    /// A kind cluster.
    Kind,
}

/// The target `VIGIL_E2E_TARGET` names (unset: the local node).
pub fn target() -> Target {
    match std::env::var("VIGIL_E2E_TARGET").as_deref() {
        Ok("kind") => Target::Kind,
        Ok("node" | "") | Err(_) => Target::Node,
        Ok(other) => panic!("VIGIL_E2E_TARGET={other}: expected `node` or `kind`"),
    }
}

fn target_is_kind() -> bool {
    target() == Target::Kind
}

/// For the few tests that need the local control plane itself: on kind, prints why the test is
/// skipped and returns true.
pub fn skipped_on_kind(reason: &str) -> bool {
    let kind = target_is_kind();
    if kind {
        eprintln!("skipped on kind: {reason}");
    }
    kind
}

impl Env {
    pub fn load() -> Self {
        let target = target();
        let kind = target == Target::Kind;
        Self {
            admin_kubeconfig: required("VIGIL_E2E_ADMIN_KUBECONFIG"),
            operator_kubeconfig: required("VIGIL_E2E_OPERATOR_KUBECONFIG"),
            crictl: (target == Target::Node).then(|| required("VIGIL_E2E_CRICTL")),
            kubectl: required("KUBECTL"),
            helm: required("HELM"),
            redis_cli: std::env::var_os("REDIS_CLI")
                .map(PathBuf::from)
                .unwrap_or_else(|| "redis-cli".into()),
            artifacts: required("VIGIL_E2E_ARTIFACTS"),
            kind,
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

/// A replication that reached Ready, and how to reach its master.
pub struct ReadySet {
    pub status: RedisReplicationStatus,
    pub master: String,
    pub master_ip: String,
    pub password: String,
}

/// How long one redis-cli command of the checks may take.
pub const REDIS_CLI_TIMEOUT: Duration = Duration::from_secs(5);

/// The failover rate limit of the operators the tests start.
pub const FAILOVER_COOLDOWN: Duration = Duration::from_secs(2);

/// A namespace of one test, with its own operator.
pub struct TestNs {
    pub env: Env,
    pub name: String,
    pub admin: Client,
    operator: Option<Operator>,
}

/// How to start an operator in a test.
#[derive(Default)]
pub struct OperatorOptions<'a> {
    /// Abort at this step (crash points of safety rule 5).
    pub crash_at: Option<&'a str>,
    /// Run as this user, so a fault can target its traffic alone.
    pub uid: Option<u32>,
    /// Take part in leader election on the chart's Lease (`vigil` in `vigil-system`): only one
    /// test at a time may.
    pub leader_election: bool,
    /// The Lease's name when electing (default `vigil`, the chart's): a test of its own may
    /// elect beside the one that uses the chart's.
    pub lease: Option<&'a str>,
    /// Suffix of its log file.
    pub tag: Option<&'a str>,
    /// More `vigil operator` arguments.
    pub args: Vec<String>,
}

/// A running operator process, killed when dropped.
pub struct Operator {
    child: Child,
    /// Port of its Sentinel discovery endpoint on 127.0.0.1.
    pub sentinel_port: u16,
    /// Port of its /healthz, /readyz and /metrics on 127.0.0.1.
    pub health_port: u16,
}

impl Operator {
    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as Kubernetes stops a pod, and waits for it to exit.
    pub fn terminate(&mut self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on the child this handle owns.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// Its process id (the Lease's `holderIdentity` ends with `-<pid>`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free on 127.0.0.1 now (operators of parallel tests each need their own).
/// A port free now, below Linux's ephemeral range (32768-60999). A port from `bind(:0)` is of
/// that range, and once released any outgoing connection may take it before the operator binds
/// it (seen: an operator that could not start, "Address already in use"); ports below it are
/// handed out only to whoever binds them.
fn free_port() -> u16 {
    const FIRST: u32 = 20000;
    const COUNT: u32 = 12000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Processes of their own (the e2e suite, the benchmark) start far apart in the range.
    let offset = std::process::id() % COUNT;
    (0..COUNT)
        .map(|_| FIRST + (offset + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT) % COUNT)
        .filter_map(|port| u16::try_from(port).ok())
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// An iptables rule removed when dropped.
pub struct Blocked {
    rule: Vec<String>,
}

impl Blocked {
    /// Puts `rule` (chain first) at the top of its chain.
    fn insert(rule: Vec<String>) -> Self {
        let status = Command::new("iptables")
            .arg("-I")
            .args(&rule)
            .status()
            .expect("iptables");
        assert!(status.success(), "iptables -I {rule:?}");
        Self { rule }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(&self.rule).status();
    }
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
        self.operator = Some(self.spawn_operator(OperatorOptions::default()));
    }

    pub fn stop_operator(&mut self) {
        self.operator = None;
    }

    /// The Sentinel port of the operator `start_operator` started.
    pub fn sentinel_port(&self) -> u16 {
        self.operator
            .as_ref()
            .expect("start_operator first")
            .sentinel_port
    }

    /// The text of the `start_operator` operator's /metrics (plain HTTP/1.0 over a socket).
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let port = self
            .operator
            .as_ref()
            .expect("start_operator first")
            .health_port;
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("request /metrics");
        let mut body = String::new();
        stream.read_to_string(&mut body).expect("read /metrics");
        body
    }

    /// Starts an operator for this namespace with options; it is killed when the handle drops.
    pub fn spawn_operator(&self, opts: OperatorOptions<'_>) -> Operator {
        let tag = opts.tag.unwrap_or("operator");
        let log_path = self.env.artifacts.join(format!("{}-{tag}.log", self.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("operator log");
        let mut kubeconfig = self.env.operator_kubeconfig.clone();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
        let sentinel_port = free_port();
        let health_port = free_port();
        cmd.args([
            "operator",
            "--namespace",
            &self.name,
            "--health-addr",
            &format!("127.0.0.1:{health_port}"),
            "--sentinel-addr",
            &format!("127.0.0.1:{sentinel_port}"),
        ]);
        if opts.leader_election {
            cmd.args([
                "--leader-election=true",
                "--leader-election-namespace=vigil-system",
                format!("--lease-name={}", opts.lease.unwrap_or("vigil")).as_str(),
                "--lease-duration-seconds=4",
                "--lease-renew-interval-ms=1000",
                "--lease-retry-interval-ms=500",
            ]);
        } else {
            cmd.arg("--leader-election=false");
        }
        cmd.args(&opts.args);
        if let Some(step) = opts.crash_at {
            cmd.env("VIGIL_CRASH_AT", step);
        }
        if let Some(uid) = opts.uid {
            // The token is readable by that user only through its own copy.
            let copy = self
                .env
                .artifacts
                .join(format!("{}-{tag}.kubeconfig", self.name));
            std::fs::copy(&kubeconfig, &copy).expect("copy kubeconfig");
            std::os::unix::fs::chown(&copy, Some(uid), None).expect("chown kubeconfig");
            kubeconfig = copy;
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        }
        let child = cmd
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,vigil=debug")
            // Short enough for repeated failovers of one set in a test.
            .env(
                "VIGIL_FAILOVER_COOLDOWN_SECONDS",
                FAILOVER_COOLDOWN.as_secs().to_string(),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start operator");
        Operator {
            child,
            sentinel_port,
            health_port,
        }
    }

    /// Rejects the TCP connections that processes of `uid` open to `ip:6379`, until dropped: a
    /// fault on one process's network path only.
    pub fn block_redis_for_uid(&self, uid: u32, ip: &str) -> Blocked {
        let rule: Vec<String> = [
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            ip,
            "--dport",
            "6379",
            "-m",
            "owner",
            "--uid-owner",
            &uid.to_string(),
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Blocked::insert(rule)
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

    /// Merges `spec` into the replication's spec (a JSON merge patch: `null` removes a field).
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.replications()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap_or_else(|e| panic!("patch the spec of {name} with {spec}: {e}"));
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
                    // Ready stays set while a recorded promotion is carried out.
                    && status.target_master.is_none()
                {
                    Ok(status)
                } else {
                    Err(format!("{status:?}"))
                }
            },
        )
        .await
    }

    /// Starts the operator, creates `name` with `instances` and waits until it is Ready.
    pub async fn ready_replication(&mut self, name: &str, instances: i32) -> ReadySet {
        self.start_operator();
        self.create_ready(name, json!({"instances": instances}))
            .await
    }

    /// Creates `name` with `spec` and waits until it is Ready (the operator must be running).
    pub async fn create_ready(&mut self, name: &str, spec: serde_json::Value) -> ReadySet {
        let instances = spec["instances"]
            .as_i64()
            .and_then(|n| i32::try_from(n).ok());
        let instances = instances.expect("spec.instances");
        self.create_replication(name, spec).await;
        let status = self
            .wait_ready(name, instances, Duration::from_secs(120))
            .await;
        let master = status.current_master.clone().expect("a master is recorded");
        let master_ip = self.pod_ip(&master).await;
        let password = self.password(name).await;
        ReadySet {
            status,
            master,
            master_ip,
            password,
        }
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

    /// Deletes the pod and waits until the operator has created a new one of the same name.
    pub async fn delete_pod_and_wait_replaced(&self, pod: &str) {
        let old_uid = self.pods().get(pod).await.expect("pod").uid();
        self.delete_pod(pod).await;
        wait_for(
            &format!("{pod} recreated"),
            Duration::from_secs(90),
            || async {
                match self.pods().get(pod).await {
                    Ok(p) if p.uid() != old_uid => Ok(()),
                    Ok(_) => Err("old pod still there".into()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
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

    /// Runs redis-cli against `ip`; returns stdout, trimmed, or stderr as the error. Bounded
    /// (`REDIS_CLI_TIMEOUT`): the address of a pod that is gone stays silent (no ARP answer on
    /// the bridge, "No route to host" only after many seconds); an unbounded call outlived the
    /// waits that made it. Redis 7.0's redis-cli has no timeout option.
    pub fn redis_cli(&self, ip: &str, password: Option<&str>, args: &[&str]) -> String {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=1", &REDIS_CLI_TIMEOUT.as_secs().to_string()])
            .arg(&self.env.redis_cli)
            .args(["-h", ip, "-p", "6379", "--no-auth-warning"]);
        if let Some(pw) = password {
            cmd.args(["-a", pw]);
        }
        let out = cmd.args(args).output().expect("run redis-cli");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        match out.status.code() {
            Some(124 | 137) if stdout.is_empty() => {
                format!("redis-cli {args:?} on {ip}: no answer within {REDIS_CLI_TIMEOUT:?}")
            }
            _ if stdout.is_empty() => stderr,
            _ => stdout,
        }
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

/// Signals for chaos on a pod's container (every process of it: the agent and its redis-server).
#[derive(Clone, Copy, Debug)]
pub enum Chaos {
    /// SIGKILL: the container crashes and the kubelet restarts it.
    Crash,
    /// SIGSTOP: the container freezes (probes time out).
    Freeze,
    /// SIGCONT: a frozen container resumes.
    Resume,
}

impl TestNs {
    /// Chaos through the container runtime (crictl on the local node; on kind, from the pod's
    /// node, a container of the kind cluster): inside the pod, kill(2) cannot stop or kill PID 1
    /// (the agent), and signalling redis-server alone would leave the agent answering probes. A
    /// Resume finding no running container is a no-op: the kubelet replaced the frozen one.
    pub fn chaos(&self, pod: &str, chaos: Chaos) {
        let signal = match chaos {
            Chaos::Crash => "KILL",
            Chaos::Freeze => "STOP",
            Chaos::Resume => "CONT",
        };
        let script_args = [self.name.as_str(), pod, "redis", signal];
        let (out, node) = if self.env.kind {
            let node = self.kubectl(&[
                "get",
                "pod",
                pod,
                "-n",
                &self.name,
                "-o",
                "jsonpath={.spec.nodeName}",
            ]);
            let node = String::from_utf8_lossy(&node.stdout).trim().to_string();
            assert!(!node.is_empty(), "the node of pod {pod}");
            let out = Command::new("docker")
                .args(["exec", &node, "sh", "-c", SIGNAL_CONTAINER, "sh"])
                .args(script_args)
                .output()
                .expect("run docker exec");
            (out, node)
        } else {
            // The local node: crictl finds containerd through CRI_CONFIG_FILE.
            let crictl = self.env.crictl.as_ref().expect("VIGIL_E2E_CRICTL");
            let out = Command::new("sh")
                .args(["-c", SIGNAL_CONTAINER, "sh"])
                .args(script_args)
                .env("CRICTL", crictl)
                .output()
                .expect("run sh");
            (out, "the local node".to_string())
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let not_running = out.status.code() == Some(3);
        assert!(
            out.status.success() || (not_running && matches!(chaos, Chaos::Resume)),
            "signal {chaos:?} to pod {pod} on {node}: {}{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Writes `count` keys `prefix:i` on the master, each acknowledged by `WAIT 1` (at least one
    /// replica has it). Returns the keys that were acknowledged.
    pub fn write_acknowledged(
        &self,
        master_ip: &str,
        password: &str,
        prefix: &str,
        count: usize,
    ) -> Vec<String> {
        let mut script = String::new();
        for i in 0..count {
            script.push_str(&format!("SET {prefix}:{i} {i}\nWAIT 1 2000\n"));
        }
        let mut child = Command::new(&self.env.redis_cli)
            .args([
                "-h",
                master_ip,
                "-p",
                "6379",
                "--no-auth-warning",
                "-a",
                password,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run redis-cli");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(script.as_bytes()).expect("write commands");
        }
        let out = child.wait_with_output().expect("redis-cli output");
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let acked: Vec<String> = lines
            .chunks(2)
            .enumerate()
            .filter(|(_, pair)| {
                pair.len() == 2 && pair[0] == "OK" && pair[1].parse::<i64>().is_ok_and(|n| n >= 1)
            })
            .map(|(i, _)| format!("{prefix}:{i}"))
            .collect();
        assert_eq!(
            acked.len(),
            count,
            "every write acknowledged by WAIT 1: {lines:?}"
        );
        acked
    }

    /// Asserts every key is present on the instance at `ip`.
    pub fn assert_keys_present(&self, ip: &str, password: &str, keys: &[String]) {
        let mut args = vec!["EXISTS"];
        args.extend(keys.iter().map(String::as_str));
        let n = self.redis_cli(ip, Some(password), &args);
        assert_eq!(
            n,
            keys.len().to_string(),
            "acknowledged keys present on {ip}"
        );
    }

    /// Waits for a master other than `old` with a higher epoch, and returns the new status.
    pub async fn wait_new_master(
        &self,
        name: &str,
        old: &str,
        old_epoch: i64,
        timeout: Duration,
    ) -> RedisReplicationStatus {
        wait_for(
            &format!("{name} to replace master {old}"),
            timeout,
            || async {
                let status = self.status(name).await.ok_or("no status")?;
                match &status.current_master {
                    Some(m)
                        if m != old
                            && status.epoch > old_epoch
                            && status.target_master.is_none() =>
                    {
                        Ok(status)
                    }
                    _ => Err(format!("{status:?}")),
                }
            },
        )
        .await
    }

    /// Waits until every instance but the master replicates from it with a live link, and the
    /// master is the only instance reporting the master role.
    pub async fn wait_topology(&self, name: &str, master: &str, password: &str, timeout: Duration) {
        let master_ip = self.pod_ip(master).await;
        wait_for(
            &format!("every instance of {name} to follow {master}"),
            timeout,
            || async {
                let mut wrong = Vec::new();
                for pod in self.pod_names(name).await {
                    let Some(ip) = self
                        .pods()
                        .get(&pod)
                        .await
                        .ok()
                        .and_then(|p| p.status?.pod_ip)
                    else {
                        wrong.push(format!("{pod}: no IP"));
                        continue;
                    };
                    let role = self.info_field(&ip, password, "role");
                    let ok = if pod == master {
                        role.as_deref() == Some("master")
                    } else {
                        role.as_deref() == Some("slave")
                            && self.info_field(&ip, password, "master_host").as_deref()
                                == Some(master_ip.as_str())
                            && self
                                .info_field(&ip, password, "master_link_status")
                                .as_deref()
                                == Some("up")
                    };
                    if !ok {
                        // (With no role, what the instance answered tells why.)
                        let answer = match role {
                            Some(_) => String::new(),
                            None => format!(
                                " ({})",
                                self.redis_cli(&ip, Some(password), &["INFO", "replication"])
                            ),
                        };
                        wrong.push(format!("{pod} at {ip}: role {role:?}{answer}"));
                    }
                }
                if wrong.is_empty() {
                    Ok(())
                } else {
                    Err(wrong.join("; "))
                }
            },
        )
        .await
    }

    /// Samples every instance's role for `duration`: at no sampled instant may two instances
    /// report the master role, and the only master must be `master`.
    pub async fn assert_single_master(
        &self,
        name: &str,
        master: &str,
        password: &str,
        duration: Duration,
    ) {
        let start = Instant::now();
        let mut ips = Vec::new();
        for pod in self.pod_names(name).await {
            if let Some(ip) = self
                .pods()
                .get(&pod)
                .await
                .ok()
                .and_then(|p| p.status?.pod_ip)
            {
                ips.push((pod, ip));
            }
        }
        while start.elapsed() < duration {
            let masters: Vec<&String> = ips
                .iter()
                .filter(|(_, ip)| {
                    self.info_field(ip, password, "role").as_deref() == Some("master")
                })
                .map(|(pod, _)| pod)
                .collect();
            assert!(masters.len() <= 1, "two masters at once: {masters:?}");
            if let Some(m) = masters.first() {
                assert_eq!(
                    m.as_str(),
                    master,
                    "only the recorded master reports the master role"
                );
            }
            let labelled = self
                .pods()
                .list(&ListParams::default().labels(&format!(
                    "redis.vigil.dev/replication={name},redis.vigil.dev/role=master"
                )))
                .await
                .expect("list master pods");
            let labelled: Vec<String> = labelled.items.iter().map(ResourceExt::name_any).collect();
            assert!(
                labelled.len() <= 1 && labelled.iter().all(|p| p == master),
                "master label on {labelled:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reasons of the Events recorded on the replication, oldest first.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.admin.clone(), &self.name);
        let mut list = events
            .list(&ListParams::default().fields(&format!("regarding.name={name}")))
            .await
            .expect("list events")
            .items;
        list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        list.into_iter().filter_map(|e| e.reason).collect()
    }
}

/// Run on a node as `sh -c SIGNAL_CONTAINER sh NAMESPACE POD CONTAINER SIGNAL`: sends SIGNAL to
/// every process in the PID namespace of the pod's running container (exit 3 when none runs).
/// `$CRICTL` names crictl when it is not on PATH.
const SIGNAL_CONTAINER: &str = r#"
crictl() { "${CRICTL:-crictl}" "$@"; }
id=$(crictl ps -q --label "io.kubernetes.pod.namespace=$1" --label "io.kubernetes.pod.name=$2" \
  --label "io.kubernetes.container.name=$3")
[ -n "$id" ] || { echo "no running container $3 in pod $1/$2" >&2; exit 3; }
pid=$(crictl inspect -o go-template --template '{{.info.pid}}' "$id") || exit 1
ns=$(readlink "/proc/$pid/ns/pid") || exit 1
n=0
for p in /proc/[0-9]*; do
  [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] && kill "-$4" "${p#/proc/}" 2>/dev/null && n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "no process signalled in $1/$2 (pid $pid)" >&2; exit 1; }
"#;

impl Drop for TestNs {
    fn drop(&mut self) {
        self.operator = None;
        if std::thread::panicking() {
            // Its pods' logs and state are what tests/kind/e2e.sh and tests/e2e.sh (on the real
            // node) collect on failure.
            eprintln!("keeping namespace {} of a failed test", self.name);
            return;
        }
        // Leave nothing running: deleting the namespace makes the kubelet stop its pods.
        let _ = Command::new(&self.env.kubectl)
            .env("KUBECONFIG", &self.env.admin_kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

impl TestNs {
    /// Creates a RedisReplication from raw JSON, so the apiserver, not our own types, judges it.
    pub async fn create_raw(
        &self,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<serde_json::Value, kube::Error> {
        let body = json!({
            "apiVersion": "redis.vigil.dev/v1alpha1",
            "kind": "RedisReplication",
            "metadata": {"name": name},
            "spec": spec,
        });
        let request = http::Request::post(format!(
            "/apis/redis.vigil.dev/v1alpha1/namespaces/{}/redisreplications",
            self.name
        ))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).expect("body"))
        .expect("request");
        self.admin.request(request).await
    }

    /// Asserts the apiserver rejects `spec` (422) with a message containing every one of `parts`.
    pub async fn assert_rejected(&self, spec: &serde_json::Value, parts: &[&str]) {
        let message = match self.create_raw("bad", spec).await {
            Ok(created) => panic!("spec {spec} was accepted: {created}"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "spec {spec}: {status:?}");
                status.message
            }
            Err(e) => panic!("spec {spec}: unexpected error {e}"),
        };
        for part in parts {
            assert!(
                message.contains(part),
                "spec {spec}: message {message:?} should contain {part:?}"
            );
        }
    }
}

impl TestNs {
    /// `kubectl apply --dry-run=server --server-side` of a manifest file: the apiserver judges
    /// every object without keeping any. Its output (stdout then stderr), and whether it passed.
    pub fn server_dry_run(&self, manifest: &Path) -> (bool, String) {
        let applied = self.kubectl(&[
            "apply",
            "--dry-run=server",
            "--server-side",
            "--force-conflicts",
            "-f",
            manifest.to_str().expect("utf-8 path"),
        ]);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&applied.stdout),
            String::from_utf8_lossy(&applied.stderr)
        );
        (applied.status.success(), out)
    }
}
