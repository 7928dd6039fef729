//! The ConfigMap carrying the user's extra redis.conf settings to the agent.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::{config_map_name, owned_meta};
use crate::api::RedisReplication;
use crate::redis_conf::quote;

/// Key of the rendered user settings in the ConfigMap.
pub const CONFIG_KEY: &str = "user.conf";

pub fn config_map(rr: &RedisReplication) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(rr, config_map_name(&rr.name_any())),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.into(),
            render_user_settings(&rr.spec.config),
        )])),
        ..ConfigMap::default()
    }
}

/// One `key value` line per setting, values quoted so spaces and quotes survive redis.conf parsing.
fn render_user_settings(settings: &BTreeMap<String, String>) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("{k} {}\n", quote(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::replication;
    use serde_json::json;

    #[test]
    fn renders_settings_quoted_and_sorted() {
        let rr = replication(json!({"instances": 1, "config": {
            "maxmemory-policy": "allkeys-lru", "maxmemory": "100mb", "notify-keyspace-events": "K\"x"}}));
        let cm = config_map(&rr);
        assert_eq!(
            cm.data.expect("data")[CONFIG_KEY],
            "maxmemory \"100mb\"\nmaxmemory-policy \"allkeys-lru\"\nnotify-keyspace-events \"K\\\"x\"\n"
        );
    }
}
