//! `kubectl vigil report NAME`: a support bundle (.tar.gz) of one replication: the object and
//! its summary, its pods, Services, ConfigMaps, claims, PodDisruptionBudget and Secrets (values
//! redacted, keys kept), the namespace's Events, every container's log (and the previous one
//! where the container restarted), and the operator's pods and logs where they can be found.
//! Best effort past the replication itself: what cannot be read is listed in `errors.txt`.

use std::fmt::Debug;
use std::path::PathBuf;

use flate2::Compression;
use flate2::write::GzEncoder;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, LogParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, Session};
use crate::api::RedisReplication;
use crate::labels::REPLICATION_LABEL;

/// What replaces every value of a Secret.
pub const REDACTED: &str = "REDACTED";
/// The operator's pods, as the chart labels them (`vigil.selectorLabels`).
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=vigil-operator";
/// Where kubectl apply keeps a copy of the object, values included.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Enough of a log to see what happened, bounded so that a chatty pod cannot fill the bundle.
const LOG_LIMIT_BYTES: i64 = 8 << 20;

/// Collects the bundle and writes it to `output` (or a name of its own in the current
/// directory); returns where.
pub async fn write(
    session: &Session,
    name: &str,
    output: Option<PathBuf>,
) -> Result<PathBuf, Error> {
    let rr = session.replication(name).await?;
    let ns = &session.namespace;
    let now = Timestamp::now();
    let root = format!(
        "vigil-report-{ns}-{name}-{}",
        now.strftime("%Y%m%dT%H%M%SZ")
    );
    let mut bundle = Bundle::new(&root);
    bundle.yaml("redisreplication.yaml", &rr);
    bundle.file("status.txt", super::status::text(ns, &rr, now).into_bytes());

    let owned = ListParams::default().labels(&format!("{REPLICATION_LABEL}={name}"));
    let pods: Vec<Pod> = bundle.objects(session, "pods", &owned).await;
    bundle.objects::<Service>(session, "services", &owned).await;
    bundle
        .objects::<ConfigMap>(session, "configmaps", &owned)
        .await;
    bundle
        .objects::<PersistentVolumeClaim>(session, "persistentvolumeclaims", &owned)
        .await;
    bundle
        .objects::<PodDisruptionBudget>(session, "poddisruptionbudgets", &owned)
        .await;
    bundle.secrets(session, &rr, &owned).await;
    bundle.events(session).await;
    let pod_api: Api<Pod> = Api::namespaced(session.client.clone(), ns);
    for pod in &pods {
        bundle.logs(&pod_api, pod, "logs").await;
    }
    bundle.operator(session).await;

    let bytes = bundle.finish()?;
    let path = output.unwrap_or_else(|| PathBuf::from(format!("{root}.tar.gz")));
    std::fs::write(&path, bytes).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;
    Ok(path)
}

/// The Secret with every value of `data` and `stringData` replaced by `REDACTED` (keys kept),
/// and kubectl's last-applied copy (which holds the values too) replaced the same way.
pub fn redact_secret(secret: &Secret) -> Result<serde_json::Value, Error> {
    let mut v = serde_json::to_value(secret).map_err(|e| Error::encode("a Secret", e))?;
    for field in ["data", "stringData"] {
        if let Some(map) = v.get_mut(field).and_then(|m| m.as_object_mut()) {
            for value in map.values_mut() {
                *value = REDACTED.into();
            }
        }
    }
    if let Some(applied) = v
        .pointer_mut("/metadata/annotations")
        .and_then(|a| a.as_object_mut())
        .and_then(|a| a.get_mut(LAST_APPLIED))
    {
        *applied = REDACTED.into();
    }
    Ok(v)
}

/// The files of the bundle, in memory until written.
struct Bundle {
    root: String,
    files: Vec<(String, Vec<u8>)>,
    errors: Vec<String>,
}

impl Bundle {
    fn new(root: &str) -> Self {
        Self {
            root: root.to_string(),
            files: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn file(&mut self, path: &str, bytes: Vec<u8>) {
        self.files.push((format!("{}/{path}", self.root), bytes));
    }

    fn yaml<T: Serialize>(&mut self, path: &str, value: &T) {
        match serde_yaml::to_string(value) {
            Ok(text) => self.file(path, text.into_bytes()),
            Err(e) => self.errors.push(format!("{path}: encoding as YAML: {e}")),
        }
    }

    /// Every object of kind `K` the list selects, one file each under `dir`.
    async fn objects<K>(&mut self, session: &Session, dir: &str, lp: &ListParams) -> Vec<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug
            + Serialize,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(session.client.clone(), &session.namespace);
        match api.list(lp).await {
            Ok(list) => {
                for object in &list.items {
                    self.yaml(&format!("{dir}/{}.yaml", object.name_any()), object);
                }
                list.items
            }
            Err(e) => {
                self.errors.push(format!("listing {dir}: {e}"));
                Vec::new()
            }
        }
    }

    /// The replication's own Secrets and the ones its spec names, redacted.
    async fn secrets(&mut self, session: &Session, rr: &RedisReplication, owned: &ListParams) {
        let api: Api<Secret> = Api::namespaced(session.client.clone(), &session.namespace);
        let mut secrets = match api.list(owned).await {
            Ok(list) => list.items,
            Err(e) => {
                self.errors.push(format!("listing secrets: {e}"));
                Vec::new()
            }
        };
        let named = [
            rr.spec
                .auth
                .existing_secret
                .as_ref()
                .map(|s| s.name.clone()),
            rr.spec.tls.as_ref().map(|t| t.secret_name.clone()),
        ];
        for name in named.into_iter().flatten() {
            if secrets.iter().any(|s| s.name_any() == name) {
                continue;
            }
            match api.get_opt(&name).await {
                Ok(Some(s)) => secrets.push(s),
                Ok(None) => self
                    .errors
                    .push(format!("secret {name} (named by the spec) does not exist")),
                Err(e) => self.errors.push(format!("reading secret {name}: {e}")),
            }
        }
        for secret in &secrets {
            match redact_secret(secret) {
                Ok(v) => self.yaml(&format!("secrets/{}.yaml", secret.name_any()), &v),
                Err(e) => self
                    .errors
                    .push(format!("secret {}: {e}", secret.name_any())),
            }
        }
    }

    /// Every Event of the namespace (the pods', the claims', the operator's), oldest first.
    async fn events(&mut self, session: &Session) {
        let api: Api<Event> = Api::namespaced(session.client.clone(), &session.namespace);
        match api.list(&ListParams::default()).await {
            Ok(mut list) => {
                list.items
                    .sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
                self.yaml("events.yaml", &list.items);
            }
            Err(e) => self.errors.push(format!("listing events: {e}")),
        }
    }

    /// The log of each container of `pod`, and the previous one where there is one.
    async fn logs(&mut self, api: &Api<Pod>, pod: &Pod, dir: &str) {
        let name = pod.name_any();
        let spec = pod.spec.as_ref();
        let containers = spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .map(|c| c.name.clone());
        let restarted: Vec<String> = pod
            .status
            .iter()
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            })
            .filter(|c| c.restart_count > 0)
            .map(|c| c.name.clone())
            .collect();
        for container in containers.collect::<Vec<_>>() {
            for previous in [false, true] {
                if previous && !restarted.contains(&container) {
                    continue;
                }
                let lp = LogParams {
                    container: Some(container.clone()),
                    previous,
                    timestamps: true,
                    limit_bytes: Some(LOG_LIMIT_BYTES),
                    ..LogParams::default()
                };
                let file = format!(
                    "{dir}/{name}/{container}{}.log",
                    if previous { ".previous" } else { "" }
                );
                match api.logs(&name, &lp).await {
                    Ok(text) => self.file(&file, text.into_bytes()),
                    Err(e) => self.errors.push(format!("{file}: {e}")),
                }
            }
        }
    }

    /// The operator's pods in any namespace and their logs (an operator running outside the
    /// cluster, or a user who may not list pods cluster-wide, is noted in errors.txt).
    async fn operator(&mut self, session: &Session) {
        let all: Api<Pod> = Api::all(session.client.clone());
        let lp = ListParams::default().labels(OPERATOR_SELECTOR);
        let pods = match all.list(&lp).await {
            Ok(list) => list.items,
            Err(e) => {
                self.errors.push(format!(
                    "listing the operator's pods ({OPERATOR_SELECTOR}): {e}"
                ));
                return;
            }
        };
        if pods.is_empty() {
            self.errors.push(format!(
                "no operator pod found ({OPERATOR_SELECTOR}, any namespace): is it running \
                 outside the cluster?"
            ));
        }
        for pod in &pods {
            let ns = pod.namespace().unwrap_or_default();
            self.yaml(&format!("operator/{ns}/{}.yaml", pod.name_any()), pod);
            let api: Api<Pod> = Api::namespaced(session.client.clone(), &ns);
            self.logs(&api, pod, &format!("operator/{ns}/logs")).await;
        }
    }

    /// The tar.gz, with errors.txt when something could not be collected.
    fn finish(mut self) -> Result<Vec<u8>, Error> {
        if !self.errors.is_empty() {
            let text = self.errors.join("\n") + "\n";
            self.file("errors.txt", text.into_bytes());
        }
        let mtime = u64::try_from(Timestamp::now().as_second()).unwrap_or(0);
        let io = |what: &str| {
            let what = what.to_string();
            move |source| Error::Io { what, source }
        };
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        for (path, bytes) in &self.files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            header.set_cksum();
            tar.append_data(&mut header, path, bytes.as_slice())
                .map_err(io(&format!("adding {path} to the bundle")))?;
        }
        tar.into_inner()
            .and_then(GzEncoder::finish)
            .map_err(io("finishing the bundle"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_keep_their_keys_and_lose_their_values() {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "cache-auth", "annotations": {
                LAST_APPLIED: "{\"stringData\":{\"password\":\"hunter2\"}}",
                "team": "cache",
            }},
            "type": "Opaque",
            "data": {"password": "aHVudGVyMg==", "user": "ZGVmYXVsdA=="},
            "stringData": {"extra": "hunter2"},
        }))
        .expect("secret");
        let v = redact_secret(&secret).expect("redacts");
        assert_eq!(v["data"], json!({"password": REDACTED, "user": REDACTED}));
        assert_eq!(v["stringData"], json!({"extra": REDACTED}));
        assert_eq!(v["metadata"]["annotations"][LAST_APPLIED], REDACTED);
        assert_eq!(v["metadata"]["annotations"]["team"], "cache");
        let text = v.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("aHVudGVyMg"),
            "{text}"
        );
    }

    #[test]
    fn the_bundle_is_a_tar_gz_of_its_files() {
        let mut bundle = Bundle::new("vigil-report-demo-cache");
        bundle.file("status.txt", b"Phase: Ready\n".to_vec());
        bundle.errors.push("listing events: forbidden".into());
        let bytes = bundle.finish().expect("bundle");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut files = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).expect("text");
            files.push((path, text));
        }
        assert_eq!(
            files,
            [
                (
                    "vigil-report-demo-cache/status.txt".to_string(),
                    "Phase: Ready\n".to_string()
                ),
                (
                    "vigil-report-demo-cache/errors.txt".to_string(),
                    "listing events: forbidden\n".to_string()
                ),
            ]
        );
    }
}
