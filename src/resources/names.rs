//! Names of owned objects: one place, so builders and references never disagree.

/// The container that runs `vigil agent` and Redis in every instance pod.
pub const REDIS_CONTAINER: &str = "redis";

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "vigil-operator";
/// The field manager of the user's pod labels and annotations on instance pods, apart from
/// `FIELD_MANAGER`'s, so that applying them alone never drops the rest of the pod.
pub const POD_METADATA_MANAGER: &str = "vigil-operator-pod-metadata";

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
