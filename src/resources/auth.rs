//! The auth Secret: generated once when the spec names no existing Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::{auth_secret_name, owned_meta};
use crate::api::RedisReplication;

/// Key of the password in the generated Secret.
pub const PASSWORD_KEY: &str = "password";

/// The Secret and key holding the password, or `None` when auth is disabled.
pub fn password_selector(rr: &RedisReplication) -> Option<(String, String)> {
    let auth = &rr.spec.auth;
    if !auth.enabled {
        return None;
    }
    Some(match &auth.existing_secret {
        Some(s) => (s.name.clone(), s.key.clone()),
        None => (auth_secret_name(&rr.name_any()), PASSWORD_KEY.to_string()),
    })
}

/// The generated Secret holding `password`; `None` when the user brings their own or auth is off.
pub fn auth_secret(rr: &RedisReplication, password: &str) -> Option<Secret> {
    if !rr.spec.auth.enabled || rr.spec.auth.existing_secret.is_some() {
        return None;
    }
    Some(Secret {
        metadata: owned_meta(rr, auth_secret_name(&rr.name_any())),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(PASSWORD_KEY.into(), password.into())])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::replication;
    use serde_json::json;

    #[test]
    fn generated_secret_by_default() {
        let rr = replication(json!({"instances": 1}));
        assert_eq!(
            password_selector(&rr),
            Some(("cache-auth".into(), "password".into()))
        );
        let secret = auth_secret(&rr, "s3cret").expect("generated");
        assert_eq!(secret.string_data.expect("data")["password"], "s3cret");
        assert_eq!(
            secret.metadata.owner_references.expect("owned")[0].kind,
            "RedisReplication"
        );
    }

    #[test]
    fn existing_secret_is_used_and_not_generated() {
        let rr = replication(
            json!({"instances": 1, "auth": {"existingSecret": {"name": "mine", "key": "pw"}}}),
        );
        assert_eq!(password_selector(&rr), Some(("mine".into(), "pw".into())));
        assert!(auth_secret(&rr, "x").is_none());
    }

    #[test]
    fn disabled_auth_has_no_secret() {
        let rr = replication(json!({"instances": 1, "auth": {"enabled": false}}));
        assert_eq!(password_selector(&rr), None);
        assert!(auth_secret(&rr, "x").is_none());
    }
}
