//! A one-node scheduler: binds every schedulable pod to our node through the `pods/binding`
//! subresource, as kube-scheduler does (the apiserver then sets `spec.nodeName` and the
//! PodScheduled condition).
//!
//! It honours `nodeSelector` against the node's labels (a mismatch leaves the pod Pending with
//! an Unschedulable condition, as a real scheduler would with one node) and `schedulingGates`.
//! It ignores affinity, taints/tolerations, topology spread and resource fit: with a single node
//! those can only say "no", and tests here do not rely on that.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// Whether this pod is waiting for a scheduler (us).
pub fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let unbound = spec.node_name.as_deref().unwrap_or_default().is_empty();
    let ours = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("") | Some("default-scheduler")
    );
    let gated = spec
        .scheduling_gates
        .as_ref()
        .is_some_and(|g| !g.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let terminal = matches!(phase, Some("Succeeded" | "Failed"));
    unbound && ours && !gated && !terminal && pod.metadata.deletion_timestamp.is_none()
}

/// Why the pod does not fit the node, if it does not.
pub fn mismatch(pod: &Pod, node_labels: &BTreeMap<String, String>) -> Option<String> {
    let selector = pod.spec.as_ref()?.node_selector.as_ref()?;
    let fits = selector.iter().all(|(k, v)| node_labels.get(k) == Some(v));
    (!fits).then(|| {
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.".to_string()
    })
}

/// Binds the pod, or marks it Unschedulable when its nodeSelector excludes our node.
pub async fn schedule(
    client: &Client,
    pod: &Pod,
    node: &str,
    node_labels: &BTreeMap<String, String>,
) -> kube::Result<()> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    if let Some(message) = mismatch(pod, node_labels) {
        let already = pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"));
        if !already {
            tracing::info!(pod = %name, namespace = %namespace, "pod does not fit the node: {message}");
            let patch = json!({ "status": { "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await?;
        }
        return Ok(());
    }
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: pod.uid(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {
            tracing::info!(pod = %name, namespace = %namespace, node, "pod bound");
            Ok(())
        }
        // Already bound (a race with ourselves after a relist) or gone: nothing to do.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSchedulingGate, PodSpec};

    fn pod(node: Option<&str>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn who_needs_scheduling() {
        assert!(wants_scheduling(&pod(None)));
        assert!(!wants_scheduling(&pod(Some("vigil-node"))));
        let mut gated = pod(None);
        if let Some(s) = gated.spec.as_mut() {
            s.scheduling_gates = Some(vec![PodSchedulingGate {
                name: "wait".into(),
            }]);
        }
        assert!(!wants_scheduling(&gated));
        let mut other = pod(None);
        if let Some(s) = other.spec.as_mut() {
            s.scheduler_name = Some("my-scheduler".into());
        }
        assert!(!wants_scheduling(&other));
    }

    #[test]
    fn node_selector() {
        let labels = crate::node::labels("vigil-node");
        let mut p = pod(None);
        assert_eq!(mismatch(&p, &labels), None);
        if let Some(s) = p.spec.as_mut() {
            s.node_selector = Some(BTreeMap::from([(
                "kubernetes.io/os".to_string(),
                "linux".to_string(),
            )]));
        }
        assert_eq!(mismatch(&p, &labels), None);
        if let Some(s) = p.spec.as_mut() {
            s.node_selector = Some(BTreeMap::from([("disk".to_string(), "ssd".to_string())]));
        }
        assert!(mismatch(&p, &labels).is_some());
    }
}
