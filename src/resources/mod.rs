//! Builders of the Kubernetes objects that make up a `RedisReplication`. Pure functions of the
//! spec (and, for pods, the chosen role), applied with server-side apply by the controller.

mod auth;
mod config;
mod names;
mod network_policy;
mod pdb;
mod pod;
mod rbac;
mod services;
mod storage;

pub use auth::{PASSWORD_KEY, auth_secret, password_selector};
pub use config::{CONFIG_KEY, config_map};
pub use names::*;
pub use network_policy::network_policy;
pub use pdb::pod_disruption_budget;
pub use pod::{
    AGENT_PORT, config_annotation, instance_pod, instance_pod_metadata, instance_pod_spec,
    spec_hash,
};
pub use rbac::{instance_role, instance_role_binding, instance_service_account};
pub use services::{headless_service, master_service, replicas_service};
pub use storage::instance_claim;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::api::RedisReplication;
use crate::labels::common_labels;

/// Metadata shared by every owned object: name, namespace, common labels, owner.
fn owned_meta(rr: &RedisReplication, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: rr.namespace(),
        labels: Some(common_labels(&rr.name_any())),
        owner_references: Some(owner_reference(rr).into_iter().collect()),
        ..ObjectMeta::default()
    }
}

fn owner_reference(rr: &RedisReplication) -> Option<OwnerReference> {
    rr.controller_owner_ref(&())
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::api::{RedisReplication, RedisReplicationSpec};

    /// A `RedisReplication` as the apiserver would hand it to the controller.
    pub fn replication(spec: serde_json::Value) -> RedisReplication {
        let spec: RedisReplicationSpec = serde_json::from_value(spec).expect("valid spec");
        let mut rr = RedisReplication::new("cache", spec);
        rr.metadata.namespace = Some("shop".into());
        rr.metadata.uid = Some("5b1f7b4e-0000-4000-8000-000000000001".into());
        rr
    }
}
