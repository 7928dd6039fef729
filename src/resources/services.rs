//! Services: a headless one for stable pod DNS, and role-selected ones for clients.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::pod::{EXPORTER_PORT, METRICS_PORT};
use super::{headless_service_name, master_service_name, owned_meta, replicas_service_name};
use crate::api::RedisReplication;
use crate::labels::{REPLICATION_LABEL, ROLE_LABEL, RoleLabel};
use crate::redis::REDIS_PORT;

/// Every instance, ready or not, for stable DNS names `<pod>.<name>-headless`; also the
/// exporter's `metrics` port when it runs, for a scraper that discovers pods through it.
pub fn headless_service(rr: &RedisReplication) -> Service {
    let mut ports = vec![service_port("redis", REDIS_PORT)];
    if rr.spec.exporter.enabled {
        ports.push(service_port(METRICS_PORT, EXPORTER_PORT));
    }
    service(
        rr,
        headless_service_name(&rr.name_any()),
        None,
        ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            ports: Some(ports),
            ..ServiceSpec::default()
        },
    )
}

/// Read/write traffic: the pod labelled master, and only it.
pub fn master_service(rr: &RedisReplication) -> Service {
    client_service(rr, master_service_name(&rr.name_any()), RoleLabel::Master)
}

/// Read-only traffic: the replicas.
pub fn replicas_service(rr: &RedisReplication) -> Service {
    client_service(
        rr,
        replicas_service_name(&rr.name_any()),
        RoleLabel::Replica,
    )
}

/// A Service clients use, typed and annotated as `spec.service` says.
fn client_service(rr: &RedisReplication, name: String, role: RoleLabel) -> Service {
    let settings = &rr.spec.service;
    let mut svc = service(
        rr,
        name,
        Some(role),
        ServiceSpec {
            // Always written, so going back to ClusterIP is applied too.
            type_: Some(settings.type_.as_str().into()),
            ports: Some(vec![service_port("redis", REDIS_PORT)]),
            ..ServiceSpec::default()
        },
    );
    svc.metadata.annotations =
        (!settings.annotations.is_empty()).then(|| settings.annotations.clone());
    svc
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
            ..base
        }),
        ..Service::default()
    }
}

/// A TCP port forwarded to the pods' container port of the same name.
fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
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

    fn port_names(svc: &Service) -> Vec<String> {
        svc.spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .filter_map(|p| p.name.clone())
            .collect()
    }

    #[test]
    fn client_services_take_type_and_annotations_and_headless_stays_headless() {
        let rr = replication(json!({"instances": 3, "service": {
            "type": "NodePort",
            "annotations": {"example.com/lb": "internal"},
        }}));
        for svc in [master_service(&rr), replicas_service(&rr)] {
            let annotations = svc.metadata.annotations.clone().expect("annotations");
            assert_eq!(annotations["example.com/lb"], "internal");
            assert_eq!(
                svc.spec.as_ref().and_then(|s| s.type_.as_deref()),
                Some("NodePort")
            );
            assert_eq!(port_names(&svc), ["redis"]);
        }
        let headless = headless_service(&rr);
        assert_eq!(headless.metadata.annotations, None);
        let spec = headless.spec.expect("spec");
        assert_eq!(spec.type_, None, "headless: ClusterIP None");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));

        let plain = replication(json!({"instances": 3}));
        let master = master_service(&plain);
        assert_eq!(master.metadata.annotations, None);
        assert_eq!(
            master.spec.and_then(|s| s.type_).as_deref(),
            Some("ClusterIP")
        );
    }

    #[test]
    fn headless_service_has_the_metrics_port_only_with_the_exporter() {
        let plain = replication(json!({"instances": 1}));
        assert_eq!(port_names(&headless_service(&plain)), ["redis"]);
        let exported = replication(json!({"instances": 1, "exporter": {"enabled": true}}));
        let headless = headless_service(&exported);
        assert_eq!(port_names(&headless), ["redis", "metrics"]);
        let metrics = headless
            .spec
            .and_then(|s| s.ports)
            .and_then(|p| p.into_iter().find(|p| p.name.as_deref() == Some("metrics")))
            .expect("metrics port");
        assert_eq!(metrics.port, 9121);
        assert_eq!(port_names(&master_service(&exported)), ["redis"]);
    }
}
