//! Names and labels of owned objects: one place, so builders and selectors never disagree.

use std::collections::BTreeMap;

/// Label naming the `RedisReplication` an object belongs to.
pub const REPLICATION_LABEL: &str = "redis.vigil.dev/replication";
/// Role label on pods, written only by the operator; Services select on it.
pub const ROLE_LABEL: &str = "redis.vigil.dev/role";
/// Ordinal of an instance pod.
pub const INSTANCE_LABEL: &str = "redis.vigil.dev/instance";
/// Replica priority for failover on an instance pod, as Sentinel's `replica-priority`: lower is
/// preferred among replicas with the same offset, 0 is never promoted.
pub const PRIORITY_ANNOTATION: &str = "redis.vigil.dev/replica-priority";
pub const DEFAULT_PRIORITY: u32 = 100;
/// On an instance pod: the hash of the spec it was built from (see `spec_hash`).
pub const SPEC_HASH_ANNOTATION: &str = "redis.vigil.dev/spec-hash";
/// On an instance pod: the `config` (JSON) its Redis runs with.
pub const CONFIG_ANNOTATION: &str = "redis.vigil.dev/config";
/// On a `RedisReplication`: the instance the user wants as master; the operator switches over
/// to it without losing acknowledged writes, then removes the annotation.
pub const SWITCHOVER_ANNOTATION: &str = "redis.vigil.dev/switchover-to";
/// Set by a user: makes the named pod the master at once, even when other instances hold more
/// data, which they then discard (the only path that discards data, and it takes this request).
pub const FORCE_MASTER_ANNOTATION: &str = "redis.vigil.dev/force-master";
/// The field manager of every server-side apply the operator makes.
/// The container that runs `vigil agent` and Redis in every instance pod.
pub const REDIS_CONTAINER: &str = "redis";

pub const FIELD_MANAGER: &str = "vigil-operator";
/// The field manager of the user's pod labels and annotations on instance pods, apart from
/// `FIELD_MANAGER`'s, so that applying them alone never drops the rest of the pod.
pub const POD_METADATA_MANAGER: &str = "vigil-operator-pod-metadata";

pub fn common_labels(replication: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "redis".into()),
        ("app.kubernetes.io/instance".into(), replication.into()),
        ("app.kubernetes.io/managed-by".into(), "vigil".into()),
        (REPLICATION_LABEL.into(), replication.into()),
    ])
}

/// Label selector (string form) of every pod of a replication.
pub fn pods_selector(replication: &str) -> String {
    format!("{REPLICATION_LABEL}={replication}")
}

pub fn pod_name(replication: &str, ordinal: u32) -> String {
    format!("{replication}-{ordinal}")
}

/// The ordinal of a pod named `<replication>-<n>`, if the name has that shape.
pub fn pod_ordinal(replication: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(replication)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// The claim of an instance, named as a StatefulSet would name it.
pub fn claim_name(pod: &str) -> String {
    format!("data-{pod}")
}

pub fn headless_service_name(replication: &str) -> String {
    format!("{replication}-headless")
}

/// DNS domain of the instance pods, through the headless Service (`<pod>.<domain>`): the names
/// their TLS certificates carry.
pub fn instance_domain(replication: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc", headless_service_name(replication))
}

pub fn master_service_name(replication: &str) -> String {
    format!("{replication}-master")
}

pub fn replicas_service_name(replication: &str) -> String {
    format!("{replication}-replicas")
}

pub fn config_map_name(replication: &str) -> String {
    format!("{replication}-config")
}

pub fn auth_secret_name(replication: &str) -> String {
    format!("{replication}-auth")
}

pub fn instance_account_name(replication: &str) -> String {
    format!("{replication}-instance")
}

pub fn disruption_budget_name(replication: &str) -> String {
    replication.to_string()
}

pub fn network_policy_name(replication: &str) -> String {
    replication.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_parse_only_our_shape() {
        assert_eq!(pod_ordinal("cache", "cache-2"), Some(2));
        assert_eq!(pod_ordinal("cache", "cache-x"), None);
        assert_eq!(pod_ordinal("cache", "cache-big-1"), None);
        assert_eq!(pod_ordinal("cache", "other-1"), None);
        assert_eq!(pod_ordinal("cache", &pod_name("cache", 11)), Some(11));
    }
}
