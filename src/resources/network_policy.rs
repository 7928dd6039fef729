//! The NetworkPolicy of a replication: Redis (and the exporter) admit the set's own instances
//! (replication, switchovers), the operator (probes, failover) and the clients the spec names.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::pod::EXPORTER_PORT;
use super::{network_policy_name, owned_meta};
use crate::api::RedisReplication;
use crate::labels::REPLICATION_LABEL;
use crate::redis::REDIS_PORT;

/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The policy over the replication's pods, `None` when the spec leaves it off. The agent's
/// probe port stays out of it: kubelet probes come from the node, which policies do not govern.
pub fn network_policy(rr: &RedisReplication, operator_namespace: &str) -> Option<NetworkPolicy> {
    let spec = &rr.spec.network_policy;
    if !spec.enabled {
        return None;
    }
    let name = rr.name_any();
    let own_pods = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            REPLICATION_LABEL.to_string(),
            name.clone(),
        )])),
        ..LabelSelector::default()
    };
    let clients = if spec.from.is_empty() {
        vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }]
    } else {
        spec.from.clone()
    };
    let mut ports = vec![tcp(REDIS_PORT)];
    if rr.spec.exporter.enabled {
        ports.push(tcp(EXPORTER_PORT));
    }
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                operator_namespace.to_string(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let set = NetworkPolicyPeer {
        pod_selector: Some(own_pods.clone()),
        ..NetworkPolicyPeer::default()
    };
    Some(NetworkPolicy {
        metadata: owned_meta(rr, network_policy_name(&name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(own_pods),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some([vec![set, operator], clients].concat()),
                ports: Some(ports),
            }]),
            ..NetworkPolicySpec::default()
        }),
    })
}

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::replication;
    use serde_json::json;

    fn peers(policy: &NetworkPolicy) -> Vec<serde_json::Value> {
        let rule = &policy
            .spec
            .as_ref()
            .expect("spec")
            .ingress
            .as_ref()
            .expect("ingress")[0];
        rule.from
            .iter()
            .flatten()
            .map(|p| serde_json::to_value(p).expect("json"))
            .collect()
    }

    #[test]
    fn off_by_default() {
        assert!(network_policy(&replication(json!({"instances": 3})), "vigil-system").is_none());
    }

    #[test]
    fn admits_the_set_the_operator_and_the_namespace_by_default() {
        let rr = replication(json!({"instances": 3, "networkPolicy": {"enabled": true}}));
        let policy = network_policy(&rr, "vigil-system").expect("policy");
        assert_eq!(policy.metadata.name.as_deref(), Some("cache"));
        let spec = policy.spec.as_ref().expect("spec");
        assert_eq!(
            spec.pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(BTreeMap::from([(REPLICATION_LABEL.into(), "cache".into())]))
        );
        assert_eq!(
            peers(&policy),
            vec![
                json!({"podSelector": {"matchLabels": {REPLICATION_LABEL: "cache"}}}),
                json!({"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "vigil-system"}}}),
                json!({"podSelector": {}}),
            ]
        );
        let ports = spec.ingress.as_ref().expect("ingress")[0].ports.clone();
        assert_eq!(ports.map(|p| p.len()), Some(1), "Redis only, no exporter");
    }

    #[test]
    fn named_clients_replace_the_namespace_and_the_exporter_port_opens() {
        let rr = replication(json!({"instances": 1, "exporter": {"enabled": true},
            "networkPolicy": {"enabled": true, "from": [{"podSelector": {"matchLabels": {"app": "shop"}}}]}}));
        let policy = network_policy(&rr, "ops").expect("policy");
        assert_eq!(
            peers(&policy)[2],
            json!({"podSelector": {"matchLabels": {"app": "shop"}}})
        );
        assert_eq!(peers(&policy).len(), 3);
        let ports: Vec<IntOrString> = policy.spec.expect("spec").ingress.expect("ingress")[0]
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port.clone())
            .collect();
        assert_eq!(ports, vec![IntOrString::Int(6379), IntOrString::Int(9121)]);
    }
}
