//! The parts of a `RedisReplication`'s spec: storage, auth, failover, Services, disruption
//! budget, network policy, exporter and TLS, with their defaults.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_IMAGE, RedisReplicationSpec};
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

pub(super) fn default_image() -> String {
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

/// The exporter image used when the spec names none.
pub const DEFAULT_EXPORTER_IMAGE: &str = "oliver006/redis_exporter:v1.67.0";

fn default_exporter_image() -> String {
    DEFAULT_EXPORTER_IMAGE.to_string()
}

fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(1)
}
