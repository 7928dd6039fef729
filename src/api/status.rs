//! The status of a `RedisReplication`: what the operator observed and decided, the single
//! source of truth about roles.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// Since when the operator cannot reach the current master (this streak). While set, the
    /// master's agent no longer takes the apiserver's word that it is master (safety rule 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_silent_since: Option<Time>,
    /// The pod being made master while a change is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_master: Option<String>,
    /// With failover disabled: the master that restarted with less data than a replica. It is
    /// refilled from the current master and takes the master role back once in sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hand_back_to: Option<String>,
    /// The instances fenced by request (`redis.vigil.dev/fenced-instances`): read-only, out of
    /// the Services, never promoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fenced_instances: Vec<String>,
    /// Set while the set hibernates or wakes (`redis.vigil.dev/hibernation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hibernation: Option<super::HibernationState>,
    /// Number of instances that are ready.
    #[serde(default)]
    pub ready_instances: i32,
    /// Number of instances that run the current spec (the rest await the rolling update).
    #[serde(default)]
    pub updated_instances: i32,
    /// One entry per instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
    /// The last change of master after bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,
    /// The restore of `spec.bootstrap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<super::RestoreStatus>,
    /// The link to the external master (`spec.replicaOf`), until the set is promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<super::ReplicaOfStatus>,
}

/// One failover or switchover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// When it completed.
    pub time: Time,
    pub kind: FailoverKind,
    pub from: String,
    pub to: String,
    pub reason: String,
    /// From the first sign of failure (or the start of a switchover) to every replica rewired.
    pub duration_milliseconds: i64,
    pub epoch: i64,
}

/// Why the master changed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailoverKind {
    /// The master failed.
    Failover,
    /// Planned: no acknowledged write lost.
    Switchover,
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
    /// The master is fenced by request: the set takes no writes until it is unfenced.
    Fenced,
    /// Stopping for hibernation, or hibernated: no pod runs.
    Hibernated,
    /// Every instance runs and the designated master follows the external master
    /// (`spec.replicaOf`): the set is read-only.
    Following,
}

/// What one instance is doing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Pod name.
    pub name: String,
    pub role: InstanceRole,
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
    /// Seconds since the replica last acknowledged its upstream, as the upstream reports it
    /// (`lag` in `INFO replication`); replicas ack every second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// Whether a replica's link to its upstream is up (replicas only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_status: Option<LinkStatus>,
}

/// The role an instance plays, as its last answer showed it.
// Lowercase on the wire, as Redis writes roles (and as the status said when this was a string).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceRole {
    /// Writable, following nobody.
    Master,
    /// Following an upstream.
    Replica,
    /// Read-only and following nobody until the operator decides (safety rule 2).
    Fenced,
    /// It did not answer.
    #[default]
    Unknown,
}

impl InstanceRole {
    /// The wire value, as in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Replica => "replica",
            Self::Fenced => "fenced",
            Self::Unknown => "unknown",
        }
    }
}

/// A replica's `master_link_status`, with Redis's words.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkStatus {
    /// Linked to its upstream.
    Up,
    /// Not linked: the upstream is unreachable, or the replica is (re)connecting.
    Down,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Objects written before these fields were enums carry the same words, and still parse.
    #[test]
    fn status_written_with_strings_round_trips() {
        let old = serde_json::json!({
            "epoch": 3,
            "readyInstances": 2,
            "updatedInstances": 5,
            "instances": [
                {"name": "cache-0", "role": "master", "ready": true},
                {"name": "cache-1", "role": "replica", "ready": true, "linkStatus": "up"},
                {"name": "cache-2", "role": "replica", "ready": false, "linkStatus": "down"},
                {"name": "cache-3", "role": "fenced", "ready": false},
                {"name": "cache-4", "role": "unknown", "ready": false},
            ],
            "lastFailover": {"time": "2025-01-02T03:04:05Z", "kind": "Switchover",
                "from": "cache-1", "to": "cache-0", "reason": "requested",
                "durationMilliseconds": 120, "epoch": 3},
        });
        let status: RedisReplicationStatus =
            serde_json::from_value(old.clone()).expect("old status parses");
        let roles: Vec<InstanceRole> = status.instances.iter().map(|i| i.role).collect();
        assert_eq!(
            roles,
            [
                InstanceRole::Master,
                InstanceRole::Replica,
                InstanceRole::Replica,
                InstanceRole::Fenced,
                InstanceRole::Unknown
            ]
        );
        assert_eq!(status.instances[1].link_status, Some(LinkStatus::Up));
        assert_eq!(status.instances[2].link_status, Some(LinkStatus::Down));
        assert_eq!(
            status.last_failover.as_ref().map(|f| f.kind),
            Some(FailoverKind::Switchover)
        );
        assert_eq!(serde_json::to_value(&status).expect("json"), old);
        for role in roles {
            assert_eq!(serde_json::to_value(role).expect("json"), role.as_str());
        }
    }

    #[test]
    fn unknown_words_are_refused() {
        let bad = serde_json::json!({"name": "cache-0", "role": "slave", "ready": true});
        assert!(serde_json::from_value::<InstanceStatus>(bad).is_err());
    }
}
