//! The PersistentVolumeClaim of an instance, when the spec asks for storage.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::{claim_name, owned_meta, pod_name};
use crate::api::{RedisReplication, Retention};
use crate::labels::INSTANCE_LABEL;

/// The claim for `<name>-<ordinal>`; owned by the replication (and so deleted with it) unless
/// the retention is `Retain`. It outlives its pod either way, so data survives pod replacement.
pub fn instance_claim(rr: &RedisReplication, ordinal: u32) -> Option<PersistentVolumeClaim> {
    let storage = rr.spec.storage.as_ref()?;
    let mut metadata = owned_meta(rr, claim_name(&pod_name(&rr.name_any(), ordinal)));
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(INSTANCE_LABEL.into(), ordinal.to_string());
    if storage.retention == Retention::Retain {
        metadata.owner_references = None;
    }
    Some(PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::replication;
    use serde_json::json;

    #[test]
    fn claims_follow_the_storage_spec() {
        let rr = replication(
            json!({"instances": 1, "storage": {"size": "2Gi", "storageClassName": "fast"}}),
        );
        let claim = instance_claim(&rr, 0).expect("claim");
        assert_eq!(claim.metadata.name.as_deref(), Some("data-cache-0"));
        assert!(
            claim.metadata.owner_references.is_some(),
            "deleted with the replication"
        );
        let spec = claim.spec.expect("spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        let requests = spec.resources.and_then(|r| r.requests).expect("requests");
        assert_eq!(requests["storage"], Quantity("2Gi".into()));
    }

    #[test]
    fn retained_claims_have_no_owner_and_no_storage_no_claim() {
        let rr =
            replication(json!({"instances": 1, "storage": {"size": "1Gi", "retention": "Retain"}}));
        assert!(
            instance_claim(&rr, 0)
                .expect("claim")
                .metadata
                .owner_references
                .is_none()
        );
        assert!(instance_claim(&replication(json!({"instances": 1})), 0).is_none());
    }
}
