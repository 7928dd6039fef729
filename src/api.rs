//! The `RedisReplication` custom resource (group `redis.vigil.dev`, version `v1alpha1`).
//!
//! Validation lives in the generated schema (OpenAPI bounds, enums and CEL rules) so that the
//! apiserver rejects bad input at `kubectl apply` time with a message naming the field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    shortname = "rr",
    category = "vigil",
    printcolumn = r#"{"name":"Instances","type":"integer","jsonPath":".spec.instances"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyInstances"}"#,
    printcolumn = r#"{"name":"Master","type":"string","jsonPath":".status.currentMaster"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
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

    /// Automatic failover of the master.
    #[serde(default)]
    pub failover: FailoverSpec,

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

    /// What Redis writes to `/data`: `None`, `Rdb` snapshots, or an `Aof` log. Default: `Rdb` with
    /// `storage`, `None` without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,

    /// The master name clients ask the operator's Sentinel endpoint for (`SENTINEL
    /// get-master-addr-by-name <name>`); `<namespace>.<name>` by default. Must be unique among
    /// the replications the operator watches: a name claimed twice is answered for neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9._-]+$"))]
    pub sentinel_master_name: Option<String>,
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
    /// The persistence in effect: the spec's, else `Rdb` with storage and `None` without.
    pub fn effective_persistence(&self) -> Persistence {
        self.persistence.unwrap_or(if self.storage.is_some() {
            Persistence::Rdb
        } else {
            Persistence::None
        })
    }
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

/// Observed state; the single source of truth about roles.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisReplicationStatus {
    /// Summary of the set's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Replicating, Degraded, ScaleDownBlocked, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The pod that is the master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_master: Option<String>,
    /// `ip:port` of the master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_address: Option<String>,
    /// Bumped by every promotion, written before any instance is touched.
    #[serde(default)]
    pub epoch: i64,
    /// The pod being made master while a change is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_master: Option<String>,
    /// Number of instances that are ready.
    #[serde(default)]
    pub ready_instances: i32,
    /// One entry per instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
    /// The last change of master after bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,
}

/// One failover or switchover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// When it completed.
    pub time: Time,
    /// `Failover` (the master failed) or `Switchover` (planned, no acknowledged write lost).
    pub kind: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    /// From the first sign of failure (or the start of a switchover) to every replica rewired.
    pub duration_milliseconds: i64,
    pub epoch: i64,
}

/// Summary phase of a `RedisReplication`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Pods are being created and no master is elected yet.
    Bootstrapping,
    /// Every instance runs and replicates from the master.
    Ready,
    /// A master exists but some instances are missing, unready or not replicating.
    Degraded,
    /// The recorded master is unavailable.
    MasterUnavailable,
}

/// What one instance is doing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Pod name.
    pub name: String,
    /// `master`, `replica`, `fenced` or `unknown`.
    pub role: String,
    /// The pod is Ready (a replica only when linked and synced).
    pub ready: bool,
    /// `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Replication offset as the instance reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_offset: Option<i64>,
    /// Bytes behind the master (replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// `up` or `down` (replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_status: Option<String>,
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
}
