//! A container's environment, built the way the kubelet builds it.
//!
//! Order and precedence follow the kubelet: `envFrom` sources first (later ones win), then `env`
//! entries in order (each may expand `$(VAR)` references to variables defined before it), then
//! the `KUBERNETES_SERVICE_*` service variables for names the pod did not set. On top of that the
//! "runtime" adds what a container image would: `PATH`, `HOME`, `HOSTNAME`.
//!
//! Difference from a real kubelet: `KUBERNETES_SERVICE_HOST/PORT` point at the apiserver's real
//! loopback address, not at the `kubernetes` Service ClusterIP, because nothing here (no
//! kube-proxy) makes ClusterIPs routable. Other Services' link variables (`enableServiceLinks`)
//! are not injected for the same reason.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;

use crate::expand::expand;
use crate::fieldpath::{self, PodFacts};
use crate::objects::{self, KeyData, Kind};

/// Referenced ConfigMaps/Secrets, fetched beforehand so that resolution is a pure function.
/// `None` means the object does not exist.
#[derive(Debug, Default)]
pub struct Sources {
    objects: HashMap<(Kind, String), Option<KeyData>>,
}

impl Sources {
    #[cfg(test)]
    pub fn insert(&mut self, kind: Kind, name: &str, data: Option<KeyData>) {
        self.objects.insert((kind, name.to_string()), data);
    }

    fn get(&self, kind: Kind, name: &str) -> Option<&KeyData> {
        self.objects
            .get(&(kind, name.to_string()))
            .and_then(Option::as_ref)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvError {
    #[error("{} {name:?} not found", kind.lower())]
    ObjectNotFound { kind: Kind, name: String },
    #[error("couldn't find key {key} in {} {namespace}/{name}", kind.title())]
    KeyNotFound {
        kind: Kind,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("env var {var}: {source}")]
    Field {
        var: String,
        source: fieldpath::FieldError,
    },
    #[error("env var {0} has an empty valueFrom")]
    EmptyValueFrom(String),
}

/// The ConfigMaps and Secrets a container's env refers to.
fn references(container: &Container) -> BTreeSet<(Kind, String)> {
    let mut refs = BTreeSet::new();
    for from in container.env_from.iter().flatten() {
        if let Some(cm) = &from.config_map_ref {
            refs.insert((Kind::ConfigMap, cm.name.clone()));
        }
        if let Some(s) = &from.secret_ref {
            refs.insert((Kind::Secret, s.name.clone()));
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(cm) = &from.config_map_key_ref {
            refs.insert((Kind::ConfigMap, cm.name.clone()));
        }
        if let Some(s) = &from.secret_key_ref {
            refs.insert((Kind::Secret, s.name.clone()));
        }
    }
    refs
}

/// Fetches everything the container's env refers to.
pub async fn fetch_sources(
    client: &Client,
    namespace: &str,
    container: &Container,
) -> kube::Result<Sources> {
    let mut sources = Sources::default();
    for (kind, name) in references(container) {
        let data = objects::fetch(client, namespace, kind, &name).await?;
        sources.objects.insert((kind, name), data);
    }
    Ok(sources)
}

/// The service variables a kubelet injects for the `kubernetes` Service, aimed at the real
/// apiserver address (see the module comment).
pub fn service_env(host: &str, port: u16) -> Vec<(String, String)> {
    let url = format!("tcp://{host}:{port}");
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.into()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), url.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP"), url),
        (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
        (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host.into()),
    ]
}

/// An ordered map of env vars: later inserts of the same name replace the value in place.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EnvList {
    vars: Vec<(String, String)>,
}

impl EnvList {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: &str, value: String) {
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name.to_string(), value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `$(VAR)` expansion against this list.
    pub fn expand(&self, input: &str) -> String {
        expand(input, |name| self.get(name).map(str::to_string))
    }
}

/// The variables a kubelet hands the runtime: the pod's `envFrom`/`env` plus the service
/// variables. This is also the set `$(VAR)` in `command`/`args` may refer to.
pub fn resolve(
    pod: &Pod,
    facts: &PodFacts,
    container: &Container,
    service: &[(String, String)],
    sources: &Sources,
) -> Result<EnvList, EnvError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env = EnvList::default();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(cm), _) => (Kind::ConfigMap, &cm.name, cm.optional.unwrap_or(false)),
            (None, Some(s)) => (Kind::Secret, &s.name, s.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        let Some(data) = sources.get(kind, name) else {
            if optional {
                continue;
            }
            return Err(EnvError::ObjectNotFound {
                kind,
                name: name.clone(),
            });
        };
        for (key, value) in data {
            let var = format!("{prefix}{key}");
            // The kubelet skips (and reports) keys that are not valid variable names.
            if var.is_empty() || var.contains('=') {
                continue;
            }
            env.set(&var, String::from_utf8_lossy(value).into_owned());
        }
    }

    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                // Only literal values are expanded, against what is defined so far and the
                // service variables.
                let raw = var.value.clone().unwrap_or_default();
                expand(&raw, |name| {
                    env.get(name).map(str::to_string).or_else(|| {
                        service
                            .iter()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| v.clone())
                    })
                })
            }
            Some(from) => {
                let field_error = |source| EnvError::Field {
                    var: var.name.clone(),
                    source,
                };
                let key_ref = match (&from.config_map_key_ref, &from.secret_key_ref) {
                    (Some(r), _) => Some((Kind::ConfigMap, &r.name, &r.key, r.optional)),
                    (None, Some(r)) => Some((Kind::Secret, &r.name, &r.key, r.optional)),
                    (None, None) => None,
                };
                if let Some(field) = &from.field_ref {
                    fieldpath::field(pod, facts, &field.field_path, false).map_err(field_error)?
                } else if let Some(res) = &from.resource_field_ref {
                    fieldpath::resource(pod, facts, Some(&container.name), res)
                        .map_err(field_error)?
                } else if let Some((kind, name, key, optional)) = key_ref {
                    match key_value(sources, kind, &namespace, name, key, optional)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else {
                    return Err(EnvError::EmptyValueFrom(var.name.clone()));
                }
            }
        };
        env.set(&var.name, value);
    }

    for (name, value) in service {
        if env.get(name).is_none() {
            env.set(name, value.clone());
        }
    }
    Ok(env)
}

/// One key of a ConfigMap/Secret; `Ok(None)` when it is missing but optional (the variable is
/// then not set at all, as in Kubernetes).
fn key_value(
    sources: &Sources,
    kind: Kind,
    namespace: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, EnvError> {
    let optional = optional.unwrap_or(false);
    let Some(data) = sources.get(kind, name) else {
        return if optional {
            Ok(None)
        } else {
            Err(EnvError::ObjectNotFound {
                kind,
                name: name.to_string(),
            })
        };
    };
    match data.get(key) {
        Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        None if optional => Ok(None),
        None => Err(EnvError::KeyNotFound {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
        }),
    }
}

/// The full environment of the process: a minimal base (what an image and the runtime would
/// provide; never the stand-in's own environment) overlaid with the kubelet's variables.
/// `PATH` lists the `--bin-dir`s first: they play the part of the image's filesystem, so that a
/// process finds its sibling binaries (the agent finds `redis-server`) as it would in the image.
pub fn process_env(
    kubelet_env: &EnvList,
    pod_name: &str,
    bin_dirs: &[PathBuf],
) -> Vec<(String, String)> {
    let mut path: Vec<String> = bin_dirs.iter().map(|d| d.display().to_string()).collect();
    path.extend(
        [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut env = EnvList::default();
    env.set("PATH", path.join(":"));
    env.set("HOME", "/root".into());
    env.set("HOSTNAME", pod_name.into());
    for (k, v) in kubelet_env.iter() {
        env.set(k, v.to_string());
    }
    env.vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fieldpath::tests::{sample_facts, sample_pod};
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, SecretEnvSource, SecretKeySelector,
    };

    fn literal(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(source),
        }
    }

    fn data(pairs: &[(&str, &str)]) -> Option<KeyData> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn container(env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> Container {
        Container {
            name: "redis".into(),
            env: Some(env),
            env_from: Some(env_from),
            ..Default::default()
        }
    }

    #[test]
    fn literals_fields_and_expansion() {
        let c = container(
            vec![
                from(
                    "POD_IP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                literal("ADDR", "$(POD_IP):6379"),
                literal("LATER", "$(DEFINED_AFTER)"),
                literal("DEFINED_AFTER", "x"),
                literal("API", "$(KUBERNETES_SERVICE_HOST)"),
            ],
            vec![],
        );
        let service = service_env("127.0.0.1", 6443);
        let env = resolve(
            &sample_pod(),
            &sample_facts(),
            &c,
            &service,
            &Sources::default(),
        )
        .unwrap();
        assert_eq!(env.get("ADDR"), Some("127.0.0.10:6379"));
        // Only variables defined earlier can be referenced.
        assert_eq!(env.get("LATER"), Some("$(DEFINED_AFTER)"));
        assert_eq!(env.get("API"), Some("127.0.0.1"));
        assert_eq!(env.get("KUBERNETES_SERVICE_PORT"), Some("6443"));
    }

    #[test]
    fn env_from_with_prefix_and_overrides() {
        let c = container(
            vec![literal("A", "from-env")],
            vec![
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "cfg".into(),
                        optional: None,
                    }),
                    prefix: None,
                    secret_ref: None,
                },
                EnvFromSource {
                    config_map_ref: None,
                    prefix: Some("S_".into()),
                    secret_ref: Some(SecretEnvSource {
                        name: "sec".into(),
                        optional: None,
                    }),
                },
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "missing".into(),
                        optional: Some(true),
                    }),
                    prefix: None,
                    secret_ref: None,
                },
            ],
        );
        let mut sources = Sources::default();
        sources.insert(
            Kind::ConfigMap,
            "cfg",
            data(&[("A", "from-cm"), ("B", "b")]),
        );
        sources.insert(Kind::Secret, "sec", data(&[("PASS", "hunter2")]));
        sources.insert(Kind::ConfigMap, "missing", None);
        let env = resolve(&sample_pod(), &sample_facts(), &c, &[], &sources).unwrap();
        assert_eq!(env.get("A"), Some("from-env"));
        assert_eq!(env.get("B"), Some("b"));
        assert_eq!(env.get("S_PASS"), Some("hunter2"));
    }

    #[test]
    fn key_refs_and_optional() {
        let cm_ref = |key: &str, optional: Option<bool>| EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: "cfg".into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        };
        let mut sources = Sources::default();
        sources.insert(Kind::ConfigMap, "cfg", data(&[("k", "v")]));
        sources.insert(Kind::Secret, "gone", None);

        let c = container(
            vec![
                from("K", cm_ref("k", None)),
                from("OPT", cm_ref("nope", Some(true))),
            ],
            vec![],
        );
        let env = resolve(&sample_pod(), &sample_facts(), &c, &[], &sources).unwrap();
        assert_eq!(env.get("K"), Some("v"));
        assert_eq!(env.get("OPT"), None);

        let c = container(vec![from("K", cm_ref("nope", None))], vec![]);
        let err = resolve(&sample_pod(), &sample_facts(), &c, &[], &sources).unwrap_err();
        assert_eq!(
            err.to_string(),
            "couldn't find key nope in ConfigMap demo/cfg"
        );

        let secret = EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "gone".into(),
                key: "x".into(),
                optional: None,
            }),
            ..Default::default()
        };
        let c = container(vec![from("S", secret)], vec![]);
        let err = resolve(&sample_pod(), &sample_facts(), &c, &[], &sources).unwrap_err();
        assert_eq!(err.to_string(), "secret \"gone\" not found");
    }

    #[test]
    fn process_env_has_minimal_base() {
        let mut kubelet_env = EnvList::default();
        kubelet_env.set("HOME", "/data".into());
        let env = process_env(&kubelet_env, "redis-0", &[PathBuf::from("/opt/bin")]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HOME"), Some("/data"));
        assert_eq!(get("HOSTNAME"), Some("redis-0"));
        assert!(get("PATH").is_some_and(|p| p.starts_with("/opt/bin:/usr/local/sbin")));
        assert_eq!(env.len(), 3);
    }
}
