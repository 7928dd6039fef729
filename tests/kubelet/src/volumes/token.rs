//! Service account tokens for projected volumes, obtained like the kubelet does: a TokenRequest
//! bound to the pod (so the token dies with the pod), refreshed before it expires.

use std::collections::HashMap;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

#[derive(Clone, Debug)]
struct Cached {
    token: String,
    issued: Timestamp,
    expires: Timestamp,
}

impl Cached {
    /// The kubelet's rule: refresh once 80% of the lifetime has passed, or after 24 hours
    /// (long-lived "extended" tokens are still rotated daily).
    fn needs_refresh(&self, now: Timestamp) -> bool {
        let lifetime = self.expires.duration_since(self.issued);
        let age = now.duration_since(self.issued);
        age >= lifetime.mul_f64(0.8) || age >= SignedDuration::from_hours(24)
    }
}

/// Tokens of one pod, keyed by (audience, expirationSeconds).
#[derive(Default, Debug)]
pub struct TokenCache {
    tokens: HashMap<(String, i64), Cached>,
}

impl TokenCache {
    /// A valid token for this projection, from the cache or the TokenRequest API.
    pub async fn token(
        &mut self,
        client: &Client,
        pod: &Pod,
        projection: &ServiceAccountTokenProjection,
    ) -> kube::Result<String> {
        let audience = projection.audience.clone().unwrap_or_default();
        let expiration = projection.expiration_seconds.unwrap_or(3600);
        let key = (audience.clone(), expiration);
        let now = Timestamp::now();
        if let Some(cached) = self.tokens.get(&key)
            && !cached.needs_refresh(now)
        {
            return Ok(cached.token.clone());
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            metadata: Default::default(),
            spec: TokenRequestSpec {
                // Empty means "the apiserver's own audiences", which is what the default
                // kube-api-access volume relies on.
                audiences: if audience.is_empty() {
                    vec![]
                } else {
                    vec![audience]
                },
                expiration_seconds: Some(expiration),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            status: None,
        };
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        let response = api
            .create_token_request(&sa, &PostParams::default(), &request)
            .await?;
        let status = response.status.ok_or_else(|| {
            kube::Error::Service(
                std::io::Error::other("TokenRequest response without status").into(),
            )
        })?;
        self.tokens.insert(
            key,
            Cached {
                token: status.token.clone(),
                issued: now,
                expires: status.expiration_timestamp.0,
            },
        );
        Ok(status.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_eighty_percent() {
        let issued = Timestamp::from_second(1_000_000).unwrap();
        let cached = Cached {
            token: "t".into(),
            issued,
            expires: issued + SignedDuration::from_secs(1000),
        };
        assert!(!cached.needs_refresh(issued + SignedDuration::from_secs(799)));
        assert!(cached.needs_refresh(issued + SignedDuration::from_secs(800)));
        let long = Cached {
            expires: issued + SignedDuration::from_hours(24 * 365),
            ..cached
        };
        assert!(!long.needs_refresh(issued + SignedDuration::from_hours(23)));
        assert!(long.needs_refresh(issued + SignedDuration::from_hours(24)));
    }
}
