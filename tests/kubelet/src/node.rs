//! The Node object and its heartbeats.
//!
//! kube-controller-manager's node lifecycle controller marks a node NotReady (and then evicts its
//! pods) when neither its Lease in `kube-node-lease` nor its status heartbeat is renewed; the
//! EndpointSlice controller only lists pods of nodes that exist. So we keep both fresh, like a
//! kubelet, with server-side apply (which also recreates the Node if someone deletes it).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

const MANAGER: &str = "vigil-testkubelet";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Static facts about our node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub address: String,
    pub kubelet_version: String,
    pub capacity: BTreeMap<String, Quantity>,
    /// When the stand-in started: the Ready condition's transition time.
    pub ready_since: Timestamp,
}

impl NodeSpec {
    pub fn new(name: &str, address: &str, kubelet_version: &str) -> Self {
        NodeSpec {
            name: name.to_string(),
            address: address.to_string(),
            kubelet_version: kubelet_version.to_string(),
            capacity: host_capacity(),
            ready_since: Timestamp::now(),
        }
    }
}

/// CPUs and memory of this machine, and the kubelet's default pod limit.
fn host_capacity() -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(4 * 1024 * 1024);
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{mem_kib}Ki"))),
        ("pods".to_string(), Quantity("110".into())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ])
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Labels a kubelet puts on its node.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch().to_string()),
    ])
}

fn status_body(spec: &NodeSpec, now: Timestamp) -> serde_json::Value {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": Time(now),
            "lastTransitionTime": Time(spec.ready_since),
        })
    };
    let machine_id = read_trimmed("/etc/machine-id");
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": spec.name },
        "status": {
            "capacity": spec.capacity,
            "allocatable": spec.capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "vigil-testkubelet is posting ready status"),
            ],
            "addresses": [
                { "type": "InternalIP", "address": spec.address },
                { "type": "Hostname", "address": spec.name },
            ],
            "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
            "nodeInfo": {
                "machineID": machine_id,
                "systemUUID": machine_id,
                "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
                "osImage": "vigil-testkubelet (processes on the host)",
                "containerRuntimeVersion": concat!("vigil-testkubelet://", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": spec.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch(),
            },
        },
    })
}

/// Creates or refreshes the Node, its status and its Lease.
pub async fn heartbeat(client: &Client, spec: &NodeSpec) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = PatchParams::apply(MANAGER).force();
    let node = nodes
        .patch(
            &spec.name,
            &params,
            &Patch::Apply(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": { "name": spec.name, "labels": labels(&spec.name) },
            })),
        )
        .await?;
    let now = Timestamp::now();
    nodes
        .patch_status(&spec.name, &params, &Patch::Apply(status_body(spec, now)))
        .await?;

    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": spec.name,
            "namespace": LEASE_NAMESPACE,
            // Like the kubelet's: the lease goes away with the node.
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Node",
                "name": spec.name,
                "uid": node.metadata.uid,
            }],
        },
        "spec": {
            "holderIdentity": spec.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": MicroTime(now),
        },
    });
    leases
        .patch(&spec.name, &params, &Patch::Apply(lease))
        .await?;
    Ok(())
}

/// Renews node status and lease forever.
pub async fn heartbeat_loop(client: Client, spec: NodeSpec) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = heartbeat(&client, &spec).await {
            tracing::warn!(error = %e, "node heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_ready_and_address() {
        let spec = NodeSpec::new("vigil-node", "127.0.0.1", "v1.33.0");
        let body = status_body(&spec, Timestamp::now());
        let conditions = body["status"]["conditions"].as_array().unwrap();
        let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(body["status"]["addresses"][0]["address"], "127.0.0.1");
        assert_eq!(body["status"]["capacity"]["pods"], "110");
        assert!(
            body["status"]["capacity"]["memory"]
                .as_str()
                .unwrap()
                .ends_with("Ki")
        );
    }
}
