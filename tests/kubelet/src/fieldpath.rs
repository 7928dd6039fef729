//! The downward API: values of `fieldRef` and `resourceFieldRef`, shared by env vars and
//! downwardAPI volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// What the downward API knows besides the Pod object: facts the kubelet decides.
#[derive(Clone, Debug)]
pub struct PodFacts {
    pub pod_ip: Option<String>,
    pub host_ip: String,
    /// Node allocatable, used for `limits.*` when a container sets no limit (as the kubelet does).
    pub node_allocatable: BTreeMap<String, Quantity>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FieldError {
    #[error("unsupported fieldPath {0:?}")]
    UnsupportedField(String),
    #[error("unsupported resource {0:?}")]
    UnsupportedResource(String),
    #[error("container {0:?} not found in pod")]
    NoSuchContainer(String),
    #[error("invalid quantity {0:?}")]
    BadQuantity(String),
}

/// Resolves a `fieldRef.fieldPath`.
///
/// `in_volume` selects the volume flavour: only volumes may expose all labels/annotations at once
/// (as `key="value"` lines), and only env vars may read status and spec fields.
pub fn field(
    pod: &Pod,
    facts: &PodFacts,
    path: &str,
    in_volume: bool,
) -> Result<String, FieldError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" if in_volume => format_map(meta.labels.as_ref()),
        "metadata.annotations" if in_volume => format_map(meta.annotations.as_ref()),
        "spec.nodeName" if !in_volume => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" if !in_volume => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" if !in_volume => facts.pod_ip.clone().unwrap_or_default(),
        "status.podIPs" if !in_volume => facts.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" if !in_volume => facts.host_ip.clone(),
        other => {
            if let Some(key) = subscript(other, "metadata.labels") {
                lookup(meta.labels.as_ref(), &key)
            } else if let Some(key) = subscript(other, "metadata.annotations") {
                lookup(meta.annotations.as_ref(), &key)
            } else {
                return Err(FieldError::UnsupportedField(other.to_string()));
            }
        }
    };
    Ok(value)
}

/// Resolves a `resourceFieldRef` for `container` (env vars: the container itself; volumes: the
/// one named in the selector).
pub fn resource(
    pod: &Pod,
    facts: &PodFacts,
    default_container: Option<&str>,
    selector: &ResourceFieldSelector,
) -> Result<String, FieldError> {
    let name = selector
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or(default_container)
        .unwrap_or_default();
    let container =
        find_container(pod, name).ok_or_else(|| FieldError::NoSuchContainer(name.to_string()))?;
    let (section, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| FieldError::UnsupportedResource(selector.resource.clone()))?;
    let resources = container.resources.as_ref();
    let declared = match section {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(FieldError::UnsupportedResource(selector.resource.clone())),
    }
    .and_then(|m| m.get(resource));
    // Like the kubelet: an unset limit reads as the node's allocatable amount; an unset request
    // reads as zero.
    let quantity = match (declared, section) {
        (Some(q), _) => Some(q),
        (None, "limits") => facts.node_allocatable.get(resource),
        (None, _) => None,
    };
    let value = match quantity {
        Some(q) => quantity::parse(&q.0).ok_or_else(|| FieldError::BadQuantity(q.0.clone()))?,
        None => 0.0,
    };
    let divisor = match &selector.divisor {
        Some(d) => quantity::parse(&d.0).ok_or_else(|| FieldError::BadQuantity(d.0.clone()))?,
        None => 1.0,
    };
    let divisor = if divisor == 0.0 { 1.0 } else { divisor };
    quantity::divide_ceil(value, divisor)
        .map(|v| v.to_string())
        .ok_or_else(|| FieldError::BadQuantity(selector.resource.clone()))
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// `metadata.labels['key']` -> `key`.
fn subscript(path: &str, prefix: &str) -> Option<String> {
    let inner = path
        .strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")?;
    Some(inner.to_string())
}

fn lookup(map: Option<&BTreeMap<String, String>>, key: &str) -> String {
    map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
}

/// The downward API volume format for whole maps: one `key="value"` line per entry, sorted by
/// key, values quoted with Go's escaping rules (which programs parsing these files expect).
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let Some(map) = map else { return String::new() };
    map.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A double-quoted string with Go `strconv.Quote` escapes for the characters that matter.
fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn sample_pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("redis-0".into()),
                namespace: Some("demo".into()),
                uid: Some("uid-1".into()),
                labels: Some(BTreeMap::from([
                    ("app".to_string(), "redis".to_string()),
                    ("role".to_string(), "master".to_string()),
                ])),
                annotations: Some(BTreeMap::from([(
                    "note".to_string(),
                    "a \"b\"\n".to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("vigil-node".into()),
                service_account_name: Some("default".into()),
                containers: vec![Container {
                    name: "redis".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([(
                            "memory".to_string(),
                            Quantity("1Gi".into()),
                        )])),
                        requests: Some(BTreeMap::from([(
                            "cpu".to_string(),
                            Quantity("250m".into()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    pub(crate) fn sample_facts() -> PodFacts {
        PodFacts {
            pod_ip: Some("127.0.0.10".into()),
            host_ip: "127.0.0.1".into(),
            node_allocatable: BTreeMap::from([("cpu".to_string(), Quantity("2".into()))]),
        }
    }

    #[test]
    fn env_fields() {
        let (pod, facts) = (sample_pod(), sample_facts());
        let get = |p: &str| field(&pod, &facts, p, false);
        assert_eq!(get("metadata.name").as_deref(), Ok("redis-0"));
        assert_eq!(get("metadata.namespace").as_deref(), Ok("demo"));
        assert_eq!(get("metadata.uid").as_deref(), Ok("uid-1"));
        assert_eq!(get("metadata.labels['role']").as_deref(), Ok("master"));
        assert_eq!(get("metadata.labels['absent']").as_deref(), Ok(""));
        assert_eq!(get("spec.nodeName").as_deref(), Ok("vigil-node"));
        assert_eq!(get("spec.serviceAccountName").as_deref(), Ok("default"));
        assert_eq!(get("status.podIP").as_deref(), Ok("127.0.0.10"));
        assert_eq!(get("status.hostIP").as_deref(), Ok("127.0.0.1"));
        assert!(get("metadata.labels").is_err());
        assert!(get("spec.bogus").is_err());
    }

    #[test]
    fn volume_fields() {
        let (pod, facts) = (sample_pod(), sample_facts());
        assert_eq!(
            field(&pod, &facts, "metadata.labels", true).as_deref(),
            Ok("app=\"redis\"\nrole=\"master\"")
        );
        assert_eq!(
            field(&pod, &facts, "metadata.annotations", true).as_deref(),
            Ok("note=\"a \\\"b\\\"\\n\"")
        );
        assert!(field(&pod, &facts, "status.podIP", true).is_err());
    }

    #[test]
    fn resources() {
        let (pod, facts) = (sample_pod(), sample_facts());
        let sel = |r: &str, d: Option<&str>| ResourceFieldSelector {
            container_name: None,
            resource: r.into(),
            divisor: d.map(|d| Quantity(d.into())),
        };
        let get = |s: &ResourceFieldSelector| resource(&pod, &facts, Some("redis"), s);
        assert_eq!(
            get(&sel("limits.memory", Some("1Mi"))).as_deref(),
            Ok("1024")
        );
        assert_eq!(get(&sel("requests.cpu", None)).as_deref(), Ok("1"));
        assert_eq!(get(&sel("requests.cpu", Some("1m"))).as_deref(), Ok("250"));
        // No CPU limit: node allocatable.
        assert_eq!(get(&sel("limits.cpu", None)).as_deref(), Ok("2"));
        assert!(get(&sel("bogus", None)).is_err());
    }
}
