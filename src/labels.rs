//! The label and annotation keys vigil writes, and the role label's values. A leaf module (it
//! imports nothing of the crate), so the API types and the object builders both use it without
//! depending on each other.

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

/// Discovery's announcement Leases: the label naming the group (the replicas of one operator
/// deployment), and the announced endpoint and watched namespace (empty: all of them).
pub const SENTINEL_GROUP_LABEL: &str = "redis.vigil.dev/sentinel-group";
pub const SENTINEL_ADDRESS_ANNOTATION: &str = "redis.vigil.dev/sentinel-address";
pub const SENTINEL_SCOPE_ANNOTATION: &str = "redis.vigil.dev/sentinel-scope";

const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const MANAGER: &str = "vigil";

/// Labels of every object vigil owns.
pub fn common_labels(replication: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "redis".into()),
        ("app.kubernetes.io/instance".into(), replication.into()),
        (MANAGED_BY_LABEL.into(), MANAGER.into()),
        (REPLICATION_LABEL.into(), replication.into()),
    ])
}

/// Label selector (string form) of every object vigil owns, of every replication.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGER}")
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_managed_selector_selects_what_common_labels_label() {
        let (key, value) = managed_selector()
            .split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .expect("key=value");
        assert_eq!(common_labels("cache").get(&key), Some(&value));
    }

    #[test]
    fn role_labels_round_trip() {
        for role in [RoleLabel::Master, RoleLabel::Replica] {
            assert_eq!(RoleLabel::parse(role.as_str()), Some(role));
        }
        assert_eq!(RoleLabel::parse("fenced"), None);
    }
}
