//! The `RedisReplication` custom resource (group `redis.vigil.dev`, version `v1alpha1`).
//!
//! Validation lives in the generated schema (OpenAPI bounds, enums and CEL rules) so that the
//! apiserver rejects bad input at `kubectl apply` time with a message naming the field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

mod backup;
mod replica_of;
pub mod requests;
mod rules;
mod settings;
mod status;

use rules::{
    bootstrap_transition_rule, owned_keys_message, owned_keys_rule, replica_of_rules,
    reserved_keys_rule, reserved_label_condition, reserved_prefix_condition, tls_transition_rule,
};
use settings::default_image;
pub use settings::*;

pub use backup::*;
pub use replica_of::*;
pub use requests::HibernationState;
pub use status::{
    FailoverKind, FailoverRecord, InstanceRole, InstanceStatus, LinkStatus, Phase,
    RedisReplicationStatus,
};

/// API group of every vigil resource.
pub const GROUP: &str = "redis.vigil.dev";

/// The server image used when the spec names none.
pub const DEFAULT_IMAGE: &str = "ghcr.io/vigil-dev/vigil-server:0.1.0";

/// redis.conf keys that the operator or the agent own; users may not set them through `config`.
pub const OWNED_CONFIG_KEYS: &[&str] = &[
    "bind",
    "port",
    "tls-port",
    "dir",
    "dbfilename",
    "appendfilename",
    "appenddirname",
    "daemonize",
    "supervised",
    "pidfile",
    "logfile",
    "include",
    "protected-mode",
    "requirepass",
    "masterauth",
    "masteruser",
    "aclfile",
    "user",
    "replicaof",
    "slaveof",
    "replica-announce-ip",
    "replica-announce-port",
    "slave-announce-ip",
    "slave-announce-port",
    "replica-read-only",
    "slave-read-only",
    "rename-command",
    "unixsocket",
    "unixsocketperm",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-replication",
    "tls-auth-clients",
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "min-slaves-to-write",
    "min-slaves-max-lag",
];

/// A master/replica set of Redis (or Valkey) instances watched over by vigil.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "redis.vigil.dev",
    version = "v1alpha1",
    kind = "RedisReplication",
    namespaced,
    status = "RedisReplicationStatus",
    // The disruption controller reads a PodDisruptionBudget's expected pod count (needed for
    // `maxUnavailable`) from the scale subresource of the pods' controller, this resource.
    scale(
        spec_replicas_path = ".spec.instances",
        status_replicas_path = ".status.readyInstances"
    ),
    shortname = "rr",
    category = "vigil",
    printcolumn = r#"{"name":"Instances","type":"integer","jsonPath":".spec.instances"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyInstances"}"#,
    printcolumn = r#"{"name":"Master","type":"string","jsonPath":".status.currentMaster"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = tls_transition_rule())]
#[x_kube(validation = bootstrap_transition_rule())]
#[x_kube(validation = replica_of_rules()[0].clone())]
#[x_kube(validation = replica_of_rules()[1].clone())]
pub struct RedisReplicationSpec {
    /// Total number of Redis instances: one master, the others its replicas.
    #[schemars(range(min = 1, max = 64))]
    pub instances: i32,

    /// Server image: the project's server image (`vigil agent` as entrypoint) by default.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// Pull policy of the server image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Secrets used to pull the server image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// CPU and memory of the Redis container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Password authentication for clients and replication.
    #[serde(default)]
    pub auth: AuthSpec,

    /// TLS for clients and replication: the instances serve TLS only on port 6379 and replicas
    /// link to their master over TLS. Absent: plain TCP. It cannot be added to or removed from
    /// an existing RedisReplication (a TLS replica cannot follow a plain master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Automatic failover of the master.
    #[serde(default)]
    pub failover: FailoverSpec,

    /// How replicas follow the master: `Star` (every replica follows the master) or `Chain`
    /// (master -> instance 1 -> instance 2 ..., in ordinal order, kept across failovers; a
    /// replica whose upstream is unavailable or still syncing follows the master meanwhile).
    #[serde(default)]
    pub topology: Topology,

    /// Extra redis.conf settings. Keys that vigil owns (such as `port`, `replicaof`,
    /// `requirepass`) are rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    #[x_kube(validation = kube::core::Rule::new(owned_keys_rule()).message(kube::core::Message::Expression(owned_keys_message())).reason(kube::core::Reason::FieldValueForbidden))]
    pub config: BTreeMap<String, String>,

    /// A PersistentVolumeClaim per instance for `/data`, kept across pod replacement. Absent:
    /// an emptyDir, which survives container restarts but not pod deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// What Redis writes to `/data`: `None`, `Rdb` snapshots, or an `Aof` log. Default: `Rdb`
    /// (on the claim with `storage`, else on the pod's emptyDir), so a restarted process keeps
    /// its data. `None`: a restarted instance comes back empty (the `PersistenceDisabled`
    /// condition says so) and is refilled from a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,

    /// The master name clients ask the operator's Sentinel endpoint for (`SENTINEL
    /// get-master-addr-by-name <name>`); `<namespace>.<name>` by default. Must be unique among
    /// the replications the operator watches: a name claimed twice is answered for neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9._-]+$"))]
    pub sentinel_master_name: Option<String>,

    /// Node labels an instance's node must have, as a Pod's `nodeSelector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the instances tolerate, as a Pod's `tolerations`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Node and pod (anti-)affinity of the instances, as a Pod's `affinity`. To keep instances
    /// on different nodes, use pod anti-affinity on the label
    /// `app.kubernetes.io/instance: <name>`, which every instance carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How instances spread across zones or nodes, as a Pod's `topologySpreadConstraints`;
    /// select the instances with `app.kubernetes.io/instance: <name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the instances' pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// Extra labels on every instance pod. Labels vigil sets (`app.kubernetes.io/name`,
    /// `app.kubernetes.io/instance`, `app.kubernetes.io/managed-by` and any `redis.vigil.dev/`
    /// key) are rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = reserved_keys_rule("pod label", &reserved_label_condition()))]
    pub pod_labels: BTreeMap<String, String>,

    /// Extra annotations on every instance pod. `redis.vigil.dev/` keys are vigil's and are
    /// rejected (set `redis.vigil.dev/replica-priority` on a single pod instead).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = reserved_keys_rule("pod annotation", &reserved_prefix_condition()))]
    pub pod_annotations: BTreeMap<String, String>,

    /// The `<name>-master` and `<name>-replicas` Services clients connect to.
    #[serde(default)]
    pub service: ClientServiceSpec,

    /// A PodDisruptionBudget `<name>` over the instances, limiting how many a drain may evict
    /// at once. On by default.
    #[serde(default)]
    pub pod_disruption_budget: DisruptionBudgetSpec,

    /// A Prometheus exporter (redis_exporter) next to each instance, serving `/metrics` on the
    /// port `metrics` (9121) of the pod and of the `<name>-headless` Service. Off by default.
    #[serde(default)]
    pub exporter: ExporterSpec,

    /// A NetworkPolicy `<name>` that admits traffic to Redis (and the exporter) only from the
    /// set's own instances, the operator's namespace and `from`. Off by default: it needs a
    /// network plugin that enforces NetworkPolicies.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Where backups of this set go (`RedisBackup`, `RedisScheduledBackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// Start a new set from a backup: its first instance loads the snapshot before any other
    /// instance starts. Only when the set is created; it cannot be changed afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.bootstrap cannot be changed").reason(kube::core::Reason::FieldValueForbidden))]
    pub bootstrap: Option<BootstrapSpec>,

    /// Follow an external master (disaster recovery): the set is read-only and its designated
    /// master replicates from the source. Only when the set is created (following replaces
    /// its data); remove it to promote the set, writable with everything it had received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<ReplicaOfSpec>,
}

/// Every CRD, in the order `vigil crd` prints them; each is the file `crds/<name>.yaml`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        RedisReplication::crd(),
        RedisBackup::crd(),
        RedisScheduledBackup::crd(),
    ]
}

/// One CRD as YAML, exactly what `crds/<name>.yaml` holds.
pub fn crd_yaml_of(mut crd: CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    // Helm keeps the CRDs (and so every resource) when the chart is uninstalled.
    crd.metadata.annotations = Some(BTreeMap::from([(
        "helm.sh/resource-policy".to_string(),
        "keep".to_string(),
    )]));
    Ok(format!(
        "# Generated by `vigil crd`; do not edit.\n---\n{}",
        serde_yaml::to_string(&crd)?
    ))
}

/// The RedisReplication CRD as YAML.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    crd_yaml_of(RedisReplication::crd())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::rules::reserved_prefix;
    use super::*;

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: RedisReplicationSpec =
            serde_json::from_value(serde_json::json!({"instances": 3})).expect("valid spec");
        assert_eq!(spec.image, DEFAULT_IMAGE);
        assert!(spec.auth.enabled);
        assert!(spec.failover.enabled);
        assert_eq!(spec.failover.down_after_milliseconds, 5000);
    }

    #[test]
    fn crd_carries_validation_rules_and_columns() {
        let yaml = crd_yaml().expect("crd renders");
        assert!(yaml.contains("x-kubernetes-validations"));
        assert!(yaml.contains("is managed by vigil and cannot be set"));
        assert!(yaml.contains("minimum: 1"));
        for column in ["Instances", "Ready", "Master", "Phase", "Age"] {
            assert!(yaml.contains(&format!("name: {column}")), "{column}");
        }
    }

    #[test]
    fn owned_keys_rule_lists_every_key() {
        let rule = owned_keys_rule();
        for key in OWNED_CONFIG_KEYS {
            assert!(rule.contains(&format!("'{key}'")));
        }
    }

    #[test]
    fn shape_fields_default_to_a_budget_clusterip_and_no_exporter() {
        let spec: RedisReplicationSpec =
            serde_json::from_value(serde_json::json!({"instances": 3})).expect("valid spec");
        assert!(spec.pod_disruption_budget.enabled);
        assert_eq!(
            spec.pod_disruption_budget.max_unavailable,
            IntOrString::Int(1)
        );
        assert_eq!(spec.service.type_, ServiceType::ClusterIp);
        assert!(!spec.exporter.enabled);
        assert_eq!(spec.exporter.image, DEFAULT_EXPORTER_IMAGE);
        let nodeport: ClientServiceSpec =
            serde_json::from_value(serde_json::json!({"type": "NodePort"})).expect("valid");
        assert_eq!(nodeport.type_.as_str(), "NodePort");
        let cluster_ip = serde_json::to_value(ClientServiceSpec::default()).expect("json");
        assert_eq!(cluster_ip["type"], "ClusterIP");
    }

    #[test]
    fn reserved_pod_keys_cover_every_label_vigil_sets() {
        let labels = reserved_label_condition();
        for key in crate::labels::common_labels("cache").keys() {
            assert!(
                labels.contains(&format!("'{key}'")) || key.starts_with(&reserved_prefix()),
                "{key}"
            );
        }
        for key in [crate::labels::ROLE_LABEL, crate::labels::INSTANCE_LABEL] {
            assert!(key.starts_with(&reserved_prefix()), "{key}");
        }
        let yaml = crd_yaml().expect("crd renders");
        assert!(yaml.contains("pod label '"));
        assert!(yaml.contains("pod annotation '"));
        assert!(yaml.contains("maxUnavailable must be a number >= 0"));
    }

    #[test]
    fn crd_refuses_turning_tls_on_or_off() {
        let yaml = crd_yaml().expect("crd renders");
        assert!(
            yaml.contains("rule: has(self.tls) == has(oldSelf.tls)"),
            "{yaml}"
        );
        assert!(yaml.contains("message: spec.tls cannot be added to or removed from"));
        assert!(yaml.contains("fieldPath: .tls"));
        let spec: RedisReplicationSpec = serde_json::from_value(
            serde_json::json!({"instances": 3, "tls": {"secretName": "cache-tls"}}),
        )
        .expect("valid spec");
        let tls = spec.tls.expect("tls");
        assert_eq!(tls.secret_name, "cache-tls");
        assert!(
            !tls.auth_clients,
            "clients authenticate with the password by default"
        );
    }

    #[test]
    fn crd_has_the_scale_subresource_budgets_need() {
        let crd = RedisReplication::crd();
        let scale = crd.spec.versions[0]
            .subresources
            .as_ref()
            .and_then(|s| s.scale.as_ref())
            .expect("scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.instances");
        assert_eq!(scale.status_replicas_path, ".status.readyInstances");
    }
}
