//! The CEL rules of the schema that the apiserver checks at `kubectl apply` time.

use super::{GROUP, OWNED_CONFIG_KEYS};

fn owned_keys_list() -> String {
    let quoted: Vec<String> = OWNED_CONFIG_KEYS.iter().map(|k| format!("'{k}'")).collect();
    format!("[{}]", quoted.join(", "))
}

pub(super) fn owned_keys_rule() -> String {
    format!("self.all(k, !(k.lowerAscii() in {}))", owned_keys_list())
}

/// Names the first offending key, so the user sees exactly what to remove.
pub(super) fn owned_keys_message() -> String {
    format!(
        "\"config key '\" + self.filter(k, k.lowerAscii() in {})[0] + \"' is managed by vigil and cannot be set\"",
        owned_keys_list()
    )
}

/// Label and annotation keys under this prefix are vigil's.
pub(super) fn reserved_prefix() -> String {
    format!("{GROUP}/")
}

/// CEL: key `k` is under vigil's own prefix.
pub(super) fn reserved_prefix_condition() -> String {
    format!("k.startsWith('{}')", reserved_prefix())
}

/// CEL: key `k` is a label vigil sets on its pods (its prefix, or one of the common labels).
pub(super) fn reserved_label_condition() -> String {
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
pub(super) fn reserved_keys_rule(what: &str, condition: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.all(k, !({condition}))"))
        .message(kube::core::Message::Expression(format!(
            "\"{what} '\" + self.filter(k, {condition})[0] + \"' is managed by vigil and cannot be set\""
        )))
        .reason(kube::core::Reason::FieldValueForbidden)
}

/// Turning TLS on or off cannot roll: a TLS replica cannot follow a plain master and the other
/// way round, so the apiserver refuses the change.
pub(super) fn tls_transition_rule() -> kube::core::Rule {
    kube::core::Rule::new("has(self.tls) == has(oldSelf.tls)")
        .message(
            "spec.tls cannot be added to or removed from an existing RedisReplication (a TLS \
             replica cannot follow a plain master); create a new RedisReplication instead",
        )
        .field_path(".tls")
        .reason(kube::core::Reason::FieldValueForbidden)
}

/// A restore happens when a set is created: adding a bootstrap later would not restore
/// anything, and removing it would hide where the data came from.
pub(super) fn bootstrap_transition_rule() -> kube::core::Rule {
    kube::core::Rule::new("has(self.bootstrap) == has(oldSelf.bootstrap)")
        .message("spec.bootstrap can only be given when a RedisReplication is created")
        .field_path(".bootstrap")
        .reason(kube::core::Reason::FieldValueForbidden)
}

/// Following a source replaces a set's data with the source's, so a running set cannot start
/// following (only a new one can); and a set restored from a backup cannot also follow.
pub(super) fn replica_of_rules() -> [kube::core::Rule; 2] {
    [
        kube::core::Rule::new("!has(self.replicaOf) || has(oldSelf.replicaOf)")
            .message(
                "spec.replicaOf can only be given when a RedisReplication is created (following \
                 a source replaces the set's data); remove it to promote the set",
            )
            .field_path(".replicaOf")
            .reason(kube::core::Reason::FieldValueForbidden),
        kube::core::Rule::new("!has(self.replicaOf) || !has(self.bootstrap)")
            .message("spec.replicaOf and spec.bootstrap cannot be combined")
            .field_path(".replicaOf")
            .reason(kube::core::Reason::FieldValueForbidden),
    ]
}
