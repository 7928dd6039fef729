//! The instance Pod: the server image with `vigil agent` as PID 1, which runs redis-server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    REDIS_CONTAINER, claim_name, config_map_name, headless_service_name, instance_account_name,
    owned_meta, password_selector, pod_name,
};
use crate::api::RedisReplication;
use crate::api::requests::{RESTART_ANNOTATION, RESTARTED_AT_ANNOTATION};
use crate::labels::{CONFIG_ANNOTATION, INSTANCE_LABEL, SPEC_HASH_ANNOTATION};
use crate::redis::REDIS_PORT;
use crate::redis_conf::UNIX_SOCKET;

/// Port of the agent's probe server.
pub const AGENT_PORT: u16 = 8080;

/// Port (and its name) of the optional exporter's `/metrics`: redis_exporter's default.
pub const EXPORTER_PORT: u16 = 9121;
pub const METRICS_PORT: &str = "metrics";

/// Where things live inside the instance container.
pub const DATA_DIR: &str = "/data";
pub const CONFIG_DIR: &str = "/etc/vigil";
pub const RUN_DIR: &str = "/run/vigil";
/// The TLS Secret's files. Not under `CONFIG_DIR`: a mount inside the read-only ConfigMap
/// volume needs a mount point created in it, which container runtimes refuse.
pub const TLS_DIR: &str = "/etc/vigil-tls";
const AGENT_BINARY: &str = "/usr/local/bin/vigil";

/// Mode of the TLS Secret's files: the kubelet gives them the pod's fsGroup (999, the server's
/// group), so the server reads the key and other users cannot.
const TLS_FILE_MODE: i32 = 0o440;

/// The pod of instance `ordinal`, created without a role label: only the operator sets it, once
/// the instance's role is decided. It carries a hash of its spec and the `config` it starts with,
/// so the operator knows which pods an update must replace.
pub fn instance_pod(rr: &RedisReplication, ordinal: u32) -> Pod {
    let name = rr.name_any();
    let mut metadata = owned_meta(rr, pod_name(&name, ordinal));
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(INSTANCE_LABEL.into(), ordinal.to_string());
    let spec = instance_pod_spec(rr, ordinal);
    let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(SPEC_HASH_ANNOTATION.into(), spec_hash(&spec));
    annotations.insert(CONFIG_ANNOTATION.into(), config_annotation(rr));
    if let Some(restart) = rr.annotations().get(RESTART_ANNOTATION) {
        annotations.insert(RESTARTED_AT_ANNOTATION.into(), restart.clone());
    }
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// The user's `podLabels` and `podAnnotations` for instance `ordinal`, applied under their own
/// field manager (`POD_METADATA_MANAGER`) on creation and on every spec change: they change on
/// running pods, and a key removed from the spec is removed from the pods. Keys vigil sets are
/// left out (the schema rejects them; a CRD older than that rule could let one through).
pub fn instance_pod_metadata(rr: &RedisReplication, ordinal: u32) -> Pod {
    let own = instance_pod(rr, ordinal).metadata;
    let without_own = |extra: &BTreeMap<String, String>, own: &Option<BTreeMap<String, String>>| {
        let kept: BTreeMap<String, String> = extra
            .iter()
            .filter(|(k, _)| own.as_ref().is_none_or(|o| !o.contains_key(*k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(kept)
    };
    Pod {
        metadata: ObjectMeta {
            name: own.name.clone(),
            namespace: own.namespace.clone(),
            labels: without_own(&rr.spec.pod_labels, &own.labels),
            annotations: without_own(&rr.spec.pod_annotations, &own.annotations),
            ..ObjectMeta::default()
        },
        spec: None,
        status: None,
    }
}

/// The `config` an instance started with (or took live), as the pod records it.
pub fn config_annotation(rr: &RedisReplication) -> String {
    serde_json::to_string(&rr.spec.config).unwrap_or_default()
}

/// A stable digest of a pod spec (FNV-1a over its JSON): equal specs give equal hashes across
/// operator builds, unlike `std`'s hasher, so an operator upgrade alone rolls nothing.
pub fn spec_hash(spec: &PodSpec) -> String {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The pod spec of instance `ordinal`: what `spec_hash` covers.
pub fn instance_pod_spec(rr: &RedisReplication, ordinal: u32) -> PodSpec {
    let name = rr.name_any();
    PodSpec {
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
        containers: std::iter::once(server_container(rr))
            .chain(exporter_container(rr))
            .collect(),
        node_selector: (!rr.spec.node_selector.is_empty()).then(|| rr.spec.node_selector.clone()),
        tolerations: (!rr.spec.tolerations.is_empty()).then(|| rr.spec.tolerations.clone()),
        affinity: rr.spec.affinity.clone(),
        topology_spread_constraints: (!rr.spec.topology_spread_constraints.is_empty())
            .then(|| rr.spec.topology_spread_constraints.clone()),
        priority_class_name: rr.spec.priority_class_name.clone(),
        volumes: Some(
            [
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
            ]
            .into_iter()
            .chain(tls_volume(rr))
            .collect(),
        ),
        ..PodSpec::default()
    }
}

/// The TLS Secret, with `spec.tls`.
fn tls_volume(rr: &RedisReplication) -> Option<Volume> {
    let tls = rr.spec.tls.as_ref()?;
    Some(Volume {
        name: "tls".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(tls.secret_name.clone()),
            default_mode: Some(TLS_FILE_MODE),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    })
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
    env.extend(password_env(rr));
    env.extend(restore_env(rr));
    let mut mounts = vec![
        mount("data", DATA_DIR, false),
        mount("run", RUN_DIR, false),
        mount("config", CONFIG_DIR, true),
    ];
    if let Some(tls) = &rr.spec.tls {
        env.push(plain_env("VIGIL_TLS_DIR", TLS_DIR));
        env.push(plain_env(
            "VIGIL_TLS_AUTH_CLIENTS",
            &tls.auth_clients.to_string(),
        ));
        mounts.push(mount("tls", TLS_DIR, true));
    }
    Container {
        name: REDIS_CONTAINER.into(),
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
        volume_mounts: Some(mounts),
        security_context: Some(restricted_security_context()),
        ..Container::default()
    }
}

/// The optional redis_exporter sidecar. Redis listens on the pod IP only, so that is where it
/// scrapes, with the same password as clients; with TLS it scrapes through Redis's unix socket
/// instead, as it cannot verify the pod's name while dialling its IP. No probes: it reports an
/// unreachable Redis as `redis_up 0` rather than failing, and its readiness must not take an
/// instance out of its Services.
fn exporter_container(rr: &RedisReplication) -> Option<Container> {
    let exporter = &rr.spec.exporter;
    if !exporter.enabled {
        return None;
    }
    let (mut env, mounts) = match rr.spec.tls {
        None => (
            vec![
                field_env("POD_IP", "status.podIP"),
                plain_env("REDIS_ADDR", &format!("redis://$(POD_IP):{REDIS_PORT}")),
            ],
            None,
        ),
        Some(_) => (
            vec![plain_env(
                "REDIS_ADDR",
                &format!("unix://{RUN_DIR}/{UNIX_SOCKET}"),
            )],
            Some(vec![mount("run", RUN_DIR, true)]),
        ),
    };
    env.extend(password_env(rr));
    Some(Container {
        name: "exporter".into(),
        image: Some(exporter.image.clone()),
        env: Some(env),
        volume_mounts: mounts,
        ports: Some(vec![container_port(METRICS_PORT, EXPORTER_PORT)]),
        resources: exporter.resources.clone(),
        security_context: Some(restricted_security_context()),
        ..Container::default()
    })
}

/// `REDIS_PASSWORD` from the auth Secret, when auth is on.
fn password_env(rr: &RedisReplication) -> Option<EnvVar> {
    let (secret, key) = password_selector(rr)?;
    Some(EnvVar {
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
    })
}

/// The object store's keys of a restore, once the operator resolved its source: the agent of
/// the first instance downloads the backup with them. Optional references, so a Secret
/// deleted after the restore never keeps a pod from starting.
fn restore_env(rr: &RedisReplication) -> Vec<EnvVar> {
    let Some(source) = rr
        .status
        .as_ref()
        .and_then(|s| s.restore.as_ref())
        .and_then(|r| r.source.as_ref())
    else {
        return Vec::new();
    };
    let store = &source.object_store;
    let secret = |env: &str, name: &str, key: &str| EnvVar {
        name: env.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let creds = &store.credentials;
    let mut env = vec![
        secret(
            "VIGIL_RESTORE_ACCESS_KEY_ID",
            &creds.name,
            &creds.access_key_id_key,
        ),
        secret(
            "VIGIL_RESTORE_SECRET_ACCESS_KEY",
            &creds.name,
            &creds.secret_access_key_key,
        ),
    ];
    if let Some(ca) = &store.ca {
        env.push(secret("VIGIL_RESTORE_CA", &ca.name, &ca.key));
    }
    env
}

/// What the `restricted` Pod Security Standard asks of every container (non-root and the
/// seccomp profile come from the pod's security context).
fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
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
    fn pod_runs_the_agent_with_owner_and_no_role_label() {
        let rr = replication(json!({"instances": 3, "image": "valkey-vigil:8"}));
        let pod = instance_pod(&rr, 1);
        assert_eq!(pod.metadata.name.as_deref(), Some("cache-1"));
        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert!(!labels.contains_key(crate::labels::ROLE_LABEL));
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
        let spec = instance_pod(&rr, 1).spec.expect("spec");
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
        let spec = instance_pod(&plain, 0).spec.expect("spec");
        assert!(
            spec.volumes
                .expect("volumes")
                .iter()
                .any(|v| v.name == "data" && v.empty_dir.is_some())
        );
    }

    #[test]
    fn the_spec_hash_follows_what_shapes_the_pod_and_config_is_recorded() {
        let rr = replication(json!({"instances": 3, "config": {"maxmemory": "10mb"}}));
        let annotations = |rr: &RedisReplication, ordinal| {
            instance_pod(rr, ordinal)
                .metadata
                .annotations
                .expect("annotations")
        };
        let base = annotations(&rr, 1);
        assert_eq!(base[CONFIG_ANNOTATION], r#"{"maxmemory":"10mb"}"#);
        assert_eq!(
            base[SPEC_HASH_ANNOTATION],
            annotations(&rr, 1)[SPEC_HASH_ANNOTATION],
            "stable"
        );
        let other_image = replication(json!({"instances": 3, "image": "valkey-vigil:9",
            "config": {"maxmemory": "10mb"}}));
        assert_ne!(
            base[SPEC_HASH_ANNOTATION],
            annotations(&other_image, 1)[SPEC_HASH_ANNOTATION]
        );
        let other_config = replication(json!({"instances": 3, "config": {"maxmemory": "20mb"}}));
        let changed = annotations(&other_config, 1);
        assert_eq!(
            base[SPEC_HASH_ANNOTATION], changed[SPEC_HASH_ANNOTATION],
            "config is applied live where it can be, not by a new pod"
        );
        assert_ne!(base[CONFIG_ANNOTATION], changed[CONFIG_ANNOTATION]);
    }

    #[test]
    fn undecided_pod_has_no_role_label() {
        let rr = replication(json!({"instances": 1, "auth": {"enabled": false}}));
        let pod = instance_pod(&rr, 0);
        assert!(
            !pod.metadata
                .labels
                .expect("labels")
                .contains_key(crate::labels::ROLE_LABEL)
        );
        let env = pod.spec.expect("spec").containers[0]
            .env
            .clone()
            .expect("env");
        assert!(env.iter().all(|e| e.name != "REDIS_PASSWORD"));
    }

    #[test]
    fn pod_meets_the_restricted_pod_security_standard() {
        let rr = replication(json!({"instances": 1, "exporter": {"enabled": true}}));
        let spec = instance_pod(&rr, 0).spec.expect("spec");
        let psc = spec.security_context.expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.map(|s| s.type_),
            Some("RuntimeDefault".into())
        );
        assert_eq!(spec.containers.len(), 2, "the exporter sidecar too");
        for c in &spec.containers {
            let sc = c
                .security_context
                .clone()
                .unwrap_or_else(|| panic!("security context of {}", c.name));
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_ne!(sc.privileged, Some(true), "{}", c.name);
            assert_ne!(sc.run_as_non_root, Some(false), "{}", c.name);
            assert_eq!(
                sc.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_string()]),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn scheduling_fields_reach_the_pod_spec() {
        let rr = replication(json!({
            "instances": 3,
            "nodeSelector": {"disktype": "ssd"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "redis",
                "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100,
                "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "cache"}},
                },
            }]}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "cache"}}}],
            "priorityClassName": "redis-critical",
        }));
        let spec = instance_pod(&rr, 0).spec.expect("spec");
        assert_eq!(spec.node_selector.expect("nodeSelector")["disktype"], "ssd");
        let tolerations = spec.tolerations.expect("tolerations");
        assert_eq!(tolerations[0].key.as_deref(), Some("dedicated"));
        assert_eq!(tolerations[0].effect.as_deref(), Some("NoSchedule"));
        let anti = spec
            .affinity
            .and_then(|a| a.pod_anti_affinity)
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .expect("preferred anti-affinity");
        assert_eq!(
            anti[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        let spread = spec
            .topology_spread_constraints
            .expect("topologySpreadConstraints");
        assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
        assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
        assert_eq!(spec.priority_class_name.as_deref(), Some("redis-critical"));

        let plain = instance_pod(&replication(json!({"instances": 1})), 0)
            .spec
            .expect("spec");
        assert_eq!(plain.node_selector, None);
        assert_eq!(plain.tolerations, None);
        assert_eq!(plain.affinity, None);
        assert_eq!(plain.topology_spread_constraints, None);
        assert_eq!(plain.priority_class_name, None);
        assert_eq!(plain.containers.len(), 1, "no exporter by default");
    }

    #[test]
    fn pod_labels_and_annotations_are_added_without_overriding_vigil() {
        let rr = replication(json!({
            "instances": 2,
            "podLabels": {"team": "checkout", "app.kubernetes.io/managed-by": "someone-else"},
            "podAnnotations": {"example.com/owner": "checkout"},
        }));
        let meta = instance_pod_metadata(&rr, 1).metadata;
        assert_eq!(meta.name.as_deref(), Some("cache-1"));
        assert_eq!(
            meta.labels,
            Some(BTreeMap::from([("team".into(), "checkout".into())])),
            "vigil's labels are vigil's (the schema rejects them before they get here)"
        );
        assert_eq!(
            meta.annotations,
            Some(BTreeMap::from([(
                "example.com/owner".into(),
                "checkout".into()
            )]))
        );
        let own = instance_pod(&rr, 1).metadata;
        assert!(!own.labels.expect("labels").contains_key("team"));
        let none = instance_pod_metadata(&replication(json!({"instances": 1})), 0).metadata;
        assert_eq!(
            (none.labels, none.annotations),
            (Some(BTreeMap::new()), Some(BTreeMap::new())),
            "empty, not absent: applying them removes what an earlier spec set"
        );
    }

    #[test]
    fn exporter_scrapes_the_local_redis_with_the_same_password() {
        let rr = replication(json!({"instances": 2, "exporter": {
            "enabled": true,
            "resources": {"limits": {"memory": "64Mi"}},
        }}));
        let spec = instance_pod(&rr, 0).spec.expect("spec");
        let exporter = spec
            .containers
            .iter()
            .find(|c| c.name == "exporter")
            .expect("exporter container");
        assert_eq!(
            exporter.image.as_deref(),
            Some(crate::api::DEFAULT_EXPORTER_IMAGE)
        );
        let port = &exporter.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("metrics"), 9121)
        );
        let env = exporter.env.as_ref().expect("env");
        let value = |name: &str| env.iter().find(|e| e.name == name).cloned();
        assert_eq!(
            value("REDIS_ADDR").and_then(|e| e.value).as_deref(),
            Some("redis://$(POD_IP):6379")
        );
        let pod_ip = env.iter().position(|e| e.name == "POD_IP");
        let addr = env.iter().position(|e| e.name == "REDIS_ADDR");
        assert!(
            pod_ip < addr,
            "POD_IP is defined before REDIS_ADDR expands it"
        );
        assert_eq!(
            value("REDIS_PASSWORD"),
            spec.containers[0]
                .env
                .as_ref()
                .and_then(|env| env.iter().find(|e| e.name == "REDIS_PASSWORD").cloned()),
            "the password of the redis container"
        );
        let limits = exporter
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits["memory"].0, "64Mi");

        let custom = replication(json!({"instances": 1, "auth": {"enabled": false},
            "exporter": {"enabled": true, "image": "registry.local/redis_exporter:1"}}));
        let spec = instance_pod(&custom, 0).spec.expect("spec");
        let exporter = &spec.containers[1];
        assert_eq!(
            exporter.image.as_deref(),
            Some("registry.local/redis_exporter:1")
        );
        assert!(
            exporter
                .env
                .iter()
                .flatten()
                .all(|e| e.name != "REDIS_PASSWORD")
        );
    }

    #[test]
    fn tls_mounts_the_secret_readable_by_the_server_and_tells_the_agent() {
        let rr = replication(json!({"instances": 2, "exporter": {"enabled": true},
            "tls": {"secretName": "cache-tls", "authClients": true}}));
        let spec = instance_pod(&rr, 0).spec.expect("spec");
        let volumes = spec.volumes.as_ref().expect("volumes");
        let secret = volumes
            .iter()
            .find(|v| v.name == "tls")
            .and_then(|v| v.secret.as_ref())
            .expect("the TLS Secret's volume");
        assert_eq!(secret.secret_name.as_deref(), Some("cache-tls"));
        assert_eq!(
            secret.default_mode,
            Some(0o440),
            "the owner and fsGroup read it"
        );
        assert_eq!(
            spec.security_context.as_ref().and_then(|s| s.fs_group),
            Some(999)
        );
        let server = &spec.containers[0];
        let mount = server
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "tls")
            .expect("tls mount");
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (TLS_DIR, Some(true))
        );
        let env = |c: &Container, name: &str| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(env(server, "VIGIL_TLS_DIR").as_deref(), Some(TLS_DIR));
        assert_eq!(
            env(server, "VIGIL_TLS_AUTH_CLIENTS").as_deref(),
            Some("true")
        );
        let exporter = &spec.containers[1];
        assert_eq!(
            env(exporter, "REDIS_ADDR").as_deref(),
            Some("unix:///run/vigil/redis.sock"),
            "the exporter scrapes through the socket, which needs no TLS"
        );
        assert!(
            exporter
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "run" && m.read_only == Some(true))
        );

        let plain = instance_pod(&replication(json!({"instances": 2})), 0)
            .spec
            .expect("spec");
        assert!(plain.volumes.iter().flatten().all(|v| v.name != "tls"));
        assert!(
            plain.containers[0]
                .env
                .iter()
                .flatten()
                .all(|e| !e.name.starts_with("VIGIL_TLS"))
        );
    }
}
