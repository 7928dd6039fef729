//! The identity of instance pods: the agent may read its own `RedisReplication`, nothing else.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;

use super::{instance_account_name, owned_meta};
use crate::api::{GROUP, RedisReplication};

pub fn instance_service_account(rr: &RedisReplication) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(rr, instance_account_name(&rr.name_any())),
        ..ServiceAccount::default()
    }
}

pub fn instance_role(rr: &RedisReplication) -> Role {
    Role {
        metadata: owned_meta(rr, instance_account_name(&rr.name_any())),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![GROUP.into()]),
            resources: Some(vec!["redisreplications".into()]),
            resource_names: Some(vec![rr.name_any()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        }]),
    }
}

pub fn instance_role_binding(rr: &RedisReplication) -> RoleBinding {
    let name = instance_account_name(&rr.name_any());
    RoleBinding {
        metadata: owned_meta(rr, name.clone()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: rr.namespace(),
            ..Subject::default()
        }]),
    }
}
