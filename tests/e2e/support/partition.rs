//! Network partitions on the real node: iptables rules inside a pod's network namespace (each
//! pod has its own interface there) or our own, and rules on the operator's traffic by its uid;
//! and a sampler that writes to every instance at once, to see from the clients' side which
//! instances accept writes when.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use tokio::task::JoinHandle;

use super::{Blocked, TestNs};

/// iptables rules in one network namespace, a pod's or our own, removed when dropped.
pub struct Cut {
    /// A process in the pod's network namespace (its sandbox); `None`: our own namespace.
    pid: Option<String>,
    rules: Vec<Vec<String>>,
}

impl Cut {
    /// Inserts `rules` (each chain first) so that they head their chains in the order given,
    /// in the network namespace of `pid` (`None`: our own). Panics if one is refused; those in
    /// by then are removed as the guard drops.
    pub fn insert(pid: Option<String>, rules: Vec<Vec<String>>) -> Self {
        let mut cut = Cut {
            pid,
            rules: Vec::new(),
        };
        // Each goes in at the top of its chain: the last first.
        for rule in rules.into_iter().rev() {
            let status = cut
                .iptables("-I", &rule)
                .unwrap_or_else(|e| panic!("run iptables: {e}"));
            assert!(
                status.success(),
                "iptables -I {rule:?} in the network namespace of {:?}",
                cut.pid
            );
            cut.rules.push(rule);
        }
        cut
    }

    fn iptables(&self, op: &str, rule: &[String]) -> std::io::Result<std::process::ExitStatus> {
        let mut cmd = match &self.pid {
            Some(pid) => {
                let mut cmd = Command::new("nsenter");
                cmd.args(["-t", pid, "-n", "iptables"]);
                cmd
            }
            None => Command::new("iptables"),
        };
        cmd.arg(op).args(rule).status()
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for rule in &self.rules {
            let _ = self.iptables("-D", rule);
        }
    }
}

/// Prints the pid of a pod's sandbox (`sh -c SANDBOX_PID sh NAMESPACE POD`).
const SANDBOX_PID: &str = r#"
crictl() { "${CRICTL:-crictl}" "$@"; }
id=$(crictl pods -q --state ready --label "io.kubernetes.pod.namespace=$1" \
  --label "io.kubernetes.pod.name=$2")
[ -n "$id" ] || { echo "no ready sandbox for pod $1/$2" >&2; exit 1; }
crictl inspectp -o go-template --template '{{.info.pid}}' "$id"
"#;

impl TestNs {
    /// The pid of `pod`'s sandbox on the local node: a process in its network namespace.
    pub fn sandbox_pid(&self, pod: &str) -> String {
        let crictl = self.env.crictl.as_ref().expect("VIGIL_E2E_CRICTL");
        let out = Command::new("sh")
            .args(["-c", SANDBOX_PID, "sh", &self.name, pod])
            .env("CRICTL", crictl)
            .output()
            .expect("run sh");
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !pid.is_empty(),
            "sandbox of {pod}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pid
    }

    /// Drops every packet between `pod` and `peers` (addresses), both ways, inside the pod's
    /// network namespace, until the guard is dropped. Everything else (the kubelet's probes,
    /// clients on the node) still reaches it.
    pub fn cut_pod_off(&self, pod: &str, peers: &[String]) -> Cut {
        let rules = peers
            .iter()
            .flat_map(|peer| {
                [
                    ["INPUT", "-s", peer.as_str(), "-j", "DROP"],
                    ["OUTPUT", "-d", peer.as_str(), "-j", "DROP"],
                ]
            })
            .map(|rule| rule.iter().map(|s| s.to_string()).collect())
            .collect();
        Cut::insert(Some(self.sandbox_pid(pod)), rules)
    }

    /// The address pods reach the apiserver at (the `kubernetes` Service).
    pub async fn apiserver_service_ip(&self) -> String {
        Api::<Service>::namespaced(self.admin.clone(), "default")
            .get("kubernetes")
            .await
            .expect("the kubernetes Service")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("its ClusterIP")
    }

    /// Drops the packets that processes of `uid` send, to `ip` or, with `None`, anywhere
    /// (loopback and the apiserver too), until dropped.
    pub fn cut_uid_off(&self, uid: u32, ip: Option<&str>) -> Blocked {
        let mut rule: Vec<String> = vec!["OUTPUT".into()];
        if let Some(ip) = ip {
            rule.extend(["-d".into(), ip.into()]);
        }
        rule.extend(
            ["-m", "owner", "--uid-owner", &uid.to_string(), "-j", "DROP"].map(String::from),
        );
        Blocked::insert(rule)
    }
}

/// One write a sampler tried.
#[derive(Clone, Debug)]
pub struct Sample {
    pub pod: String,
    pub key: String,
    pub invoked: Instant,
    pub completed: Instant,
    /// The instance took the write (`SET` answered OK).
    pub accepted: bool,
    /// `WAIT` said enough replicas have it too.
    pub acknowledged: bool,
}

/// Writes `SET` + `WAIT <acks>` to every instance every few milliseconds, each on its own
/// connection, until stopped.
pub struct Sampler {
    tasks: Vec<JoinHandle<Vec<Sample>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(20);
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(300);

impl Sampler {
    /// `acks`: how many replicas must have a write for it to count as acknowledged: the
    /// master's quorum, which is what a promotion keeps (`vigil::isolation::quorum`).
    pub fn start(pods: &[(String, String)], password: &str, acks: u32) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = pods
            .iter()
            .map(|(pod, ip)| {
                let url = format!("redis://:{password}@{ip}:6379");
                let pod = pod.clone();
                let stopped = stopped.clone();
                tokio::spawn(sample(pod, url, acks, stopped))
            })
            .collect();
        Self { tasks, stop }
    }

    pub async fn stop(self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("sampler task"));
        }
        all.sort_by_key(|s| s.invoked);
        all
    }
}

async fn sample(
    pod: String,
    url: String,
    acks: u32,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Vec<Sample> {
    let client = redis::Client::open(url).expect("redis URL");
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SAMPLE_TIMEOUT))
        .set_response_timeout(Some(SAMPLE_TIMEOUT));
    let mut conn = None;
    let mut samples = Vec::new();
    let mut n = 0u64;
    while !*stopped.borrow() {
        tokio::time::sleep(SAMPLE_EVERY).await;
        n += 1;
        let invoked = Instant::now();
        if conn.is_none() {
            conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .ok();
        }
        let key = format!("sample:{pod}:{n}");
        let result: Option<Result<(String, i64), redis::RedisError>> = match conn.as_mut() {
            Some(c) => Some(
                redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg(n)
                    .cmd("WAIT")
                    .arg(acks)
                    .arg(50)
                    .query_async(c)
                    .await,
            ),
            None => None,
        };
        let (accepted, acknowledged) = match result {
            Some(Ok((ok, acked))) => (ok == "OK", acked >= i64::from(acks)),
            Some(Err(e)) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    conn = None;
                }
                (false, false)
            }
            None => (false, false),
        };
        samples.push(Sample {
            pod: pod.clone(),
            key,
            invoked,
            completed: Instant::now(),
            accepted,
            acknowledged,
        });
    }
    samples
}

/// Which of `keys` the instance at `ip` holds.
pub async fn present(ip: &str, password: &str, keys: &[&str]) -> HashSet<String> {
    let client = redis::Client::open(format!("redis://:{password}@{ip}:6379")).expect("redis URL");
    let mut conn = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| panic!("connect to {ip}: timed out"))
    .unwrap_or_else(|e| panic!("connect to {ip}: {e}"));
    let mut held = HashSet::new();
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("EXISTS").arg(*key);
        }
        let exists: Vec<i64> =
            tokio::time::timeout(Duration::from_secs(10), pipe.query_async(&mut conn))
                .await
                .unwrap_or_else(|_| panic!("EXISTS on {ip}: timed out"))
                .unwrap_or_else(|e| panic!("EXISTS on {ip}: {e}"));
        held.extend(
            chunk
                .iter()
                .zip(exists)
                .filter(|(_, e)| *e == 1)
                .map(|(k, _)| k.to_string()),
        );
    }
    held
}
