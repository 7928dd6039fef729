//! `spec.replicaOf`: a set that follows an external master, for disaster recovery, and what
//! its status says about that link.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LinkStatus, SecretKeySelector};

/// The external master a disaster-recovery set follows. Its designated master replicates from
/// the source, the other instances from it; the set is read-only. Removing `replicaOf`
/// promotes the set: it becomes writable with everything it had received.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.master) != has(self.sentinel)").message("give either master (host and port) or sentinel (a Sentinel endpoint and master name)"))]
pub struct ReplicaOfSpec {
    /// The source master's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<SourceEndpoint>,
    /// A Sentinel endpoint (vigil's, or Redis Sentinel) that names the source's master: the set
    /// follows the source's failovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelSource>,
    /// The source's password (its `requirepass`); the set's own password when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeySelector>,
}

/// A host (name or IP) and port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceEndpoint {
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    #[serde(default = "default_redis_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// Where to ask for the source's master.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentinelSource {
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    #[serde(default = "default_sentinel_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The master's name at that Sentinel (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    #[schemars(length(min = 1, max = 253))]
    pub master_name: String,
    /// The Sentinel's own password (its `requirepass`, vigil's `--sentinel-password`), when it
    /// asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeySelector>,
}

fn default_redis_port() -> i32 {
    i32::from(crate::redis::REDIS_PORT)
}

fn default_sentinel_port() -> i32 {
    26379
}

/// `status.replicaOf`: how the set follows its source, as of the last reconcile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaOfStatus {
    /// `host:port` of the source master the designated master follows (or should).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The designated master's link to the source.
    pub link: LinkStatus,
    /// Bytes of the source's replication stream the designated master has not received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Why the source cannot be followed, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
