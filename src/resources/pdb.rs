//! The PodDisruptionBudget of a replication: a drain evicts at most `maxUnavailable` instances at
//! a time (the master's eviction being a planned switchover).

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::{disruption_budget_name, owned_meta};
use crate::api::RedisReplication;
use crate::labels::REPLICATION_LABEL;

/// The budget over every instance of the replication; `None` when the spec turns it off.
pub fn pod_disruption_budget(rr: &RedisReplication) -> Option<PodDisruptionBudget> {
    let budget = &rr.spec.pod_disruption_budget;
    if !budget.enabled {
        return None;
    }
    let name = rr.name_any();
    Some(PodDisruptionBudget {
        metadata: owned_meta(rr, disruption_budget_name(&name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(budget.max_unavailable.clone()),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(REPLICATION_LABEL.to_string(), name)])),
                ..LabelSelector::default()
            }),
            // A crashing or unready instance must not block a node drain: evicting it costs no
            // availability the budget protects.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::replication;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    #[test]
    fn budget_selects_the_instances_with_one_unavailable_by_default() {
        let rr = replication(json!({"instances": 3}));
        let pdb = pod_disruption_budget(&rr).expect("on by default");
        assert_eq!(pdb.metadata.name.as_deref(), Some("cache"));
        assert_eq!(pdb.metadata.namespace.as_deref(), Some("shop"));
        let owner = &pdb.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "RedisReplication");
        assert_eq!(owner.controller, Some(true));
        let spec = pdb.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None, "one of the two, never both");
        let selector = spec.selector.and_then(|s| s.match_labels).expect("labels");
        assert_eq!(
            selector,
            BTreeMap::from([(REPLICATION_LABEL.to_string(), "cache".to_string())])
        );
    }

    #[test]
    fn budget_follows_max_unavailable_and_enabled() {
        let rr =
            replication(json!({"instances": 4, "podDisruptionBudget": {"maxUnavailable": "50%"}}));
        let spec = pod_disruption_budget(&rr)
            .and_then(|p| p.spec)
            .expect("spec");
        assert_eq!(
            spec.max_unavailable,
            Some(IntOrString::String("50%".into()))
        );
        let off = replication(json!({"instances": 4, "podDisruptionBudget": {"enabled": false}}));
        assert!(pod_disruption_budget(&off).is_none());
    }
}
