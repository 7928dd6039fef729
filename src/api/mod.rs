//! The `RedisReplication` custom resource (group `redis.vigil.dev`, version `v1alpha1`).
//!
//! Validation lives in the generated schema (OpenAPI bounds, enums and CEL rules) so that the
//! apiserver rejects bad input at `kubectl apply` time with a message naming the field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod requests;
mod status;

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
}

/// The volume of each instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, a Kubernetes quantity such as `1Gi`.
    #[x_kube(validation = kube::core::Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("size must be a positive quantity such as 1Gi"))]
    pub size: String,
    /// StorageClass of the claims; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Whether the claims go with the RedisReplication (`Delete`) or stay (`Retain`).
    #[serde(default)]
    pub retention: Retention,
}

/// What happens to the claims when the RedisReplication is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Retention {
    #[default]
    Delete,
    Retain,
}

/// Persistence mode of every instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Persistence {
    None,
    Rdb,
    Aof,
}

impl RedisReplicationSpec {
    /// The persistence in effect: the spec's, else `Rdb` (on the claim, or on the pod's
    /// emptyDir), so a Redis process that restarts in its pod comes back with its data, as a
    /// stock redis-server does.
    pub fn effective_persistence(&self) -> Persistence {
        self.persistence.unwrap_or(Persistence::Rdb)
    }
}

/// How replicas are wired to the master.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Topology {
    /// Every replica replicates from the master.
    #[default]
    Star,
    /// Each replica replicates from the previous one, the first from the master: the master
    /// feeds one replica however many there are.
    Chain,
}

/// Image pull policy, as in a Pod's container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Authentication settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.enabled || !has(self.existingSecret)").message("existingSecret cannot be set when auth is disabled").field_path(".existingSecret"))]
pub struct AuthSpec {
    /// Require a password (`requirepass`, `masterauth`). On by default.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Use the password in this Secret instead of generating one into `<name>-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_secret: Option<SecretKeySelector>,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            existing_secret: None,
        }
    }
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the password.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Failover settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Promote a replica when the master fails. On by default.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// How long the master must be unreachable before it is considered down.
    #[serde(default = "default_down_after")]
    #[schemars(range(min = 100, max = 600000))]
    pub down_after_milliseconds: i64,

    /// `min-replicas-to-write` on the master: refuse writes unless this many replicas are linked.
    #[serde(default)]
    #[schemars(range(min = 0, max = 64))]
    pub min_replicas_to_write: i32,

    /// `min-replicas-max-lag` in seconds, used with `minReplicasToWrite`.
    #[serde(default = "default_max_lag")]
    #[schemars(range(min = 1, max = 3600))]
    pub min_replicas_max_lag: i32,
}

impl FailoverSpec {
    /// `downAfterMilliseconds` as a duration (the schema keeps it positive).
    pub fn down_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.down_after_milliseconds).unwrap_or(0))
    }
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            down_after_milliseconds: default_down_after(),
            min_replicas_to_write: 0,
            min_replicas_max_lag: default_max_lag(),
        }
    }
}

/// Type of the client Services.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// A cluster-internal address (the default).
    #[default]
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    /// Also a port on every node.
    NodePort,
    /// Also an external load balancer, where the cluster provides one.
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIp => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// How the client Services are exposed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientServiceSpec {
    /// `ClusterIP` (default), `NodePort` or `LoadBalancer`. The headless Service stays headless.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Annotations of both client Services, e.g. for a cloud load balancer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The PodDisruptionBudget of the instances.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// Create the PodDisruptionBudget. On by default; turning it off deletes it.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// How many instances a voluntary disruption (a node drain) may take down at once: a
    /// number (default 1) or a percentage of `instances` such as `50%`. Draining the master
    /// is a planned switchover.
    #[serde(default = "default_max_unavailable")]
    // Not nullable (kube marks optional int-or-strings so): an explicit null is then replaced
    // by the default instead of reaching the operator as a value it cannot read.
    #[schemars(extend("nullable" = false))]
    #[x_kube(validation = kube::core::Rule::new("type(self) == string ? self.matches('^(100|[1-9]?[0-9])%$') : self >= 0").message("maxUnavailable must be a number >= 0 or a percentage from 0% to 100%"))]
    pub max_unavailable: IntOrString,
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: default_max_unavailable(),
        }
    }
}

/// The replication's NetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy.
    #[serde(default)]
    pub enabled: bool,
    /// The clients allowed to connect, as NetworkPolicy peers (pod and namespace selectors,
    /// IP blocks). Empty: every pod of the replication's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
}

/// The metrics exporter sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExporterSpec {
    /// Run redis_exporter in every instance pod. Off by default.
    #[serde(default)]
    pub enabled: bool,

    /// Image of the exporter; it reads `REDIS_ADDR` and `REDIS_PASSWORD`.
    #[serde(default = "default_exporter_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// CPU and memory of the exporter container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ExporterSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            image: default_exporter_image(),
            resources: None,
        }
    }
}

/// TLS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret of type kubernetes.io/tls in the same namespace, as cert-manager writes it:
    /// `tls.crt` and `tls.key`, the instances' certificate, which must name
    /// `*.<name>-headless.<namespace>.svc` (the operator verifies that name) and allow client
    /// use too (replicas present it to their master); `ca.crt`, the CA that signed it.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,

    /// Clients must present a certificate signed by that CA (`tls-auth-clients yes`). Off by
    /// default: clients authenticate with the password.
    #[serde(default)]
    pub auth_clients: bool,
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}

fn default_true() -> bool {
    true
}

fn default_password_key() -> String {
    "password".to_string()
}

fn default_down_after() -> i64 {
    5000
}

fn default_max_lag() -> i32 {
    10
}

fn owned_keys_list() -> String {
    let quoted: Vec<String> = OWNED_CONFIG_KEYS.iter().map(|k| format!("'{k}'")).collect();
    format!("[{}]", quoted.join(", "))
}

fn owned_keys_rule() -> String {
    format!("self.all(k, !(k.lowerAscii() in {}))", owned_keys_list())
}

/// Names the first offending key, so the user sees exactly what to remove.
fn owned_keys_message() -> String {
    format!(
        "\"config key '\" + self.filter(k, k.lowerAscii() in {})[0] + \"' is managed by vigil and cannot be set\"",
        owned_keys_list()
    )
}

/// The exporter image used when the spec names none.
pub const DEFAULT_EXPORTER_IMAGE: &str = "oliver006/redis_exporter:v1.67.0";

fn default_exporter_image() -> String {
    DEFAULT_EXPORTER_IMAGE.to_string()
}

fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(1)
}

/// Label and annotation keys under this prefix are vigil's.
fn reserved_prefix() -> String {
    format!("{GROUP}/")
}

/// CEL: key `k` is under vigil's own prefix.
fn reserved_prefix_condition() -> String {
    format!("k.startsWith('{}')", reserved_prefix())
}

/// CEL: key `k` is a label vigil sets on its pods (its prefix, or one of the common labels).
fn reserved_label_condition() -> String {
    let common: Vec<String> = crate::labels::common_labels("")
        .into_keys()
        .filter(|k| !k.starts_with(&reserved_prefix()))
        .map(|k| format!("'{k}'"))
        .collect();
    format!(
        "{} || k in [{}]",
        reserved_prefix_condition(),
        common.join(", ")
    )
}

/// Rejects map keys matching `condition`, naming the first one (`what` says which map).
fn reserved_keys_rule(what: &str, condition: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.all(k, !({condition}))"))
        .message(kube::core::Message::Expression(format!(
            "\"{what} '\" + self.filter(k, {condition})[0] + \"' is managed by vigil and cannot be set\""
        )))
        .reason(kube::core::Reason::FieldValueForbidden)
}

/// Turning TLS on or off cannot roll: a TLS replica cannot follow a plain master and the other
/// way round, so the apiserver refuses the change.
fn tls_transition_rule() -> kube::core::Rule {
    kube::core::Rule::new("has(self.tls) == has(oldSelf.tls)")
        .message(
            "spec.tls cannot be added to or removed from an existing RedisReplication (a TLS \
             replica cannot follow a plain master); create a new RedisReplication instead",
        )
        .field_path(".tls")
        .reason(kube::core::Reason::FieldValueForbidden)
}

/// The CRD as YAML, exactly what `vigil crd` prints and `crds/` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let mut crd = RedisReplication::crd();
    // Helm keeps the CRD (and so every RedisReplication) when the chart is uninstalled.
    crd.metadata.annotations = Some(BTreeMap::from([(
        "helm.sh/resource-policy".to_string(),
        "keep".to_string(),
    )]));
    Ok(format!(
        "# Generated by `vigil crd`; do not edit.\n---\n{}",
        serde_yaml::to_string(&crd)?
    ))
}

#[cfg(test)]
mod tests {
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
