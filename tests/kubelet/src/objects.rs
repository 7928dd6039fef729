//! Reading the ConfigMaps and Secrets that env vars and volumes refer to.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

/// Key -> bytes of a ConfigMap (`data` and `binaryData`) or a Secret (`data`).
pub type KeyData = BTreeMap<String, Vec<u8>>;

/// Which kind of object a reference points at; also names it in messages the way the kubelet
/// does (`configmap "x" not found`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    pub fn lower(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
}

/// Fetches an object's keys; `Ok(None)` when it does not exist.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    kind: Kind,
    name: &str,
) -> kube::Result<Option<KeyData>> {
    match kind {
        Kind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            Ok(api.get_opt(name).await?.map(|cm| {
                let mut keys: KeyData = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                keys.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                keys
            }))
        }
        Kind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            Ok(api.get_opt(name).await?.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            }))
        }
    }
}
