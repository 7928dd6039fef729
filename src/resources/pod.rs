//! The instance Pod: the server image with `vigil agent` as PID 1, which runs redis-server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, Probe, SeccompProfile, SecretKeySelector, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    INSTANCE_LABEL, ROLE_LABEL, claim_name, config_map_name, headless_service_name,
    instance_account_name, owned_meta, password_selector, pod_name,
};
use crate::api::RedisReplication;
use crate::redis::REDIS_PORT;

/// Port of the agent's probe server.
pub const AGENT_PORT: u16 = 8080;

/// Where things live inside the instance container.
pub const DATA_DIR: &str = "/data";
pub const CONFIG_DIR: &str = "/etc/vigil";
pub const RUN_DIR: &str = "/run/vigil";
const AGENT_BINARY: &str = "/usr/local/bin/vigil";

/// The value of the role label; absent while an instance's role is undecided (fenced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleLabel {
    Master,
    Replica,
}

impl RoleLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Replica => "replica",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "master" => Some(Self::Master),
            "replica" => Some(Self::Replica),
            _ => None,
        }
    }
}

pub fn instance_pod(rr: &RedisReplication, ordinal: u32, role: Option<RoleLabel>) -> Pod {
    let name = rr.name_any();
    let mut metadata = owned_meta(rr, pod_name(&name, ordinal));
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(INSTANCE_LABEL.into(), ordinal.to_string());
    if let Some(role) = role {
        labels.insert(ROLE_LABEL.into(), role.as_str().into());
    }
    Pod {
        metadata,
        spec: Some(PodSpec {
            hostname: Some(pod_name(&name, ordinal)),
            subdomain: Some(headless_service_name(&name)),
            service_account_name: Some(instance_account_name(&name)),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(30),
            image_pull_secrets: (!rr.spec.image_pull_secrets.is_empty())
                .then(|| rr.spec.image_pull_secrets.clone()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(999),
                run_as_group: Some(999),
                fs_group: Some(999),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![server_container(rr)],
            volumes: Some(vec![
                data_volume(rr, ordinal),
                Volume {
                    name: "run".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: "config".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: config_map_name(&name),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// `/data`: the instance's claim with `storage`, else an emptyDir (kept across container
/// restarts, not pod deletion).
fn data_volume(rr: &RedisReplication, ordinal: u32) -> Volume {
    match &rr.spec.storage {
        Some(_) => Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&pod_name(&rr.name_any(), ordinal)),
                read_only: Some(false),
            }),
            ..Volume::default()
        },
        None => Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    }
}

fn server_container(rr: &RedisReplication) -> Container {
    let mut env = vec![
        plain_env("VIGIL_REPLICATION", &rr.name_any()),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        plain_env("VIGIL_DATA_DIR", DATA_DIR),
        plain_env("VIGIL_RUN_DIR", RUN_DIR),
        plain_env(
            "VIGIL_USER_CONFIG",
            &format!("{CONFIG_DIR}/{}", super::CONFIG_KEY),
        ),
    ];
    if let Some((secret, key)) = password_selector(rr) {
        env.push(EnvVar {
            name: "REDIS_PASSWORD".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret,
                    key,
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    Container {
        name: "redis".into(),
        image: Some(rr.spec.image.clone()),
        image_pull_policy: rr.spec.image_pull_policy.map(|p| p.as_str().into()),
        command: Some(vec![AGENT_BINARY.into(), "agent".into()]),
        env: Some(env),
        ports: Some(vec![
            container_port("redis", REDIS_PORT),
            container_port("agent", AGENT_PORT),
        ]),
        resources: rr.spec.resources.clone(),
        readiness_probe: Some(http_probe("/readyz", 2, 1, 1)),
        liveness_probe: Some(http_probe("/healthz", 5, 3, 2)),
        volume_mounts: Some(vec![
            mount("data", DATA_DIR, false),
            mount("run", RUN_DIR, false),
            mount("config", CONFIG_DIR, true),
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32, timeout: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("agent".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(timeout),
        ..Probe::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::replication;
    use serde_json::json;

    #[test]
    fn pod_runs_the_agent_with_role_label_and_owner() {
        let rr = replication(json!({"instances": 3, "image": "valkey-vigil:8"}));
        let pod = instance_pod(&rr, 1, Some(RoleLabel::Replica));
        assert_eq!(pod.metadata.name.as_deref(), Some("cache-1"));
        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[ROLE_LABEL], "replica");
        assert_eq!(labels[INSTANCE_LABEL], "1");
        let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.controller, Some(true));
        let spec = pod.spec.expect("spec");
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("valkey-vigil:8"));
        assert_eq!(c.command.as_ref().expect("command")[1], "agent");
        let env = c.env.as_ref().expect("env");
        let password = env
            .iter()
            .find(|e| e.name == "REDIS_PASSWORD")
            .expect("password env");
        let secret = password
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref());
        assert_eq!(secret.map(|s| s.name.as_str()), Some("cache-auth"));
    }

    #[test]
    fn storage_puts_data_on_the_instance_claim() {
        let rr = replication(json!({"instances": 2, "storage": {"size": "1Gi"}}));
        let spec = instance_pod(&rr, 1, None).spec.expect("spec");
        let data = spec
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "data")
            .expect("data");
        assert_eq!(
            data.persistent_volume_claim.expect("claim").claim_name,
            "data-cache-1"
        );
        let plain = replication(json!({"instances": 1}));
        let spec = instance_pod(&plain, 0, None).spec.expect("spec");
        assert!(
            spec.volumes
                .expect("volumes")
                .iter()
                .any(|v| v.name == "data" && v.empty_dir.is_some())
        );
    }

    #[test]
    fn undecided_pod_has_no_role_label() {
        let rr = replication(json!({"instances": 1, "auth": {"enabled": false}}));
        let pod = instance_pod(&rr, 0, None);
        assert!(
            !pod.metadata
                .labels
                .expect("labels")
                .contains_key(ROLE_LABEL)
        );
        let env = pod.spec.expect("spec").containers[0]
            .env
            .clone()
            .expect("env");
        assert!(env.iter().all(|e| e.name != "REDIS_PASSWORD"));
    }

    #[test]
    fn pod_meets_the_restricted_pod_security_standard() {
        let rr = replication(json!({"instances": 1}));
        let spec = instance_pod(&rr, 0, None).spec.expect("spec");
        let psc = spec.security_context.expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.map(|s| s.type_),
            Some("RuntimeDefault".into())
        );
        let sc = spec.containers[0]
            .security_context
            .clone()
            .expect("container security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
    }
}
