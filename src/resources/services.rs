//! Services: a headless one for stable pod DNS, and role-selected ones for clients.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    REPLICATION_LABEL, ROLE_LABEL, RoleLabel, headless_service_name, master_service_name,
    owned_meta, replicas_service_name,
};
use crate::api::RedisReplication;
use crate::redis::REDIS_PORT;

/// Every instance, ready or not, for stable DNS names `<pod>.<name>-headless`.
pub fn headless_service(rr: &RedisReplication) -> Service {
    service(
        rr,
        headless_service_name(&rr.name_any()),
        None,
        ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        },
    )
}

/// Read/write traffic: the pod labelled master, and only it.
pub fn master_service(rr: &RedisReplication) -> Service {
    service(
        rr,
        master_service_name(&rr.name_any()),
        Some(RoleLabel::Master),
        ServiceSpec::default(),
    )
}

/// Read-only traffic: the replicas.
pub fn replicas_service(rr: &RedisReplication) -> Service {
    service(
        rr,
        replicas_service_name(&rr.name_any()),
        Some(RoleLabel::Replica),
        ServiceSpec::default(),
    )
}

fn service(
    rr: &RedisReplication,
    name: String,
    role: Option<RoleLabel>,
    base: ServiceSpec,
) -> Service {
    let mut selector = BTreeMap::from([(REPLICATION_LABEL.to_string(), rr.name_any())]);
    if let Some(role) = role {
        selector.insert(ROLE_LABEL.into(), role.as_str().into());
    }
    Service {
        metadata: owned_meta(rr, name),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("redis".into()),
                port: i32::from(REDIS_PORT),
                target_port: Some(IntOrString::String("redis".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..base
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::replication;
    use serde_json::json;

    #[test]
    fn role_services_select_by_role() {
        let rr = replication(json!({"instances": 3}));
        let master = master_service(&rr)
            .spec
            .expect("spec")
            .selector
            .expect("sel");
        assert_eq!(master[ROLE_LABEL], "master");
        assert_eq!(master[REPLICATION_LABEL], "cache");
        let replicas = replicas_service(&rr)
            .spec
            .expect("spec")
            .selector
            .expect("sel");
        assert_eq!(replicas[ROLE_LABEL], "replica");
        let headless = headless_service(&rr).spec.expect("spec");
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert!(!headless.selector.expect("sel").contains_key(ROLE_LABEL));
    }
}
