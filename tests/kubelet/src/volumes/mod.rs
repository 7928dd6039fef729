//! Materialising a pod's volumes on the host and turning its volumeMounts into bind mounts.
//!
//! - emptyDir: a directory under the pod's state dir, removed with the pod.
//! - configMap, secret, downwardAPI, projected: files written from the API objects and kept
//!   current by [`PodVolumes::refresh`] (the kubelet resyncs these periodically too); mounted
//!   read-only, as the kubelet does.
//! - persistentVolumeClaim (and generic ephemeral volumes, whose claim is `<pod>-<volume>`):
//!   `STATE_DIR/pvc/<ns>/<claim>`, which outlives the pod. The PVC object must exist. If the
//!   claim was deleted and recreated (new UID), the old data is discarded, as a dynamically
//!   provisioned volume with reclaim policy Delete would be.
//! - hostPath: the host path itself.
//!
//! Other volume types are reported as unsupported and keep the pod in ContainerCreating.

mod files;
mod token;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolumeClaim, Pod, Volume,
    VolumeProjection,
};
use kube::{Api, Client};

use self::files::FileSpec;
use self::token::TokenCache;
use crate::env::EnvList;
use crate::fieldpath::{self, PodFacts};
use crate::layout::{self, Layout};
use crate::objects::{self, Kind};
use crate::process::BindMount;

/// Why a pod's volumes are not ready; shown as the containers' ContainerCreating message.
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume {volume:?}: {message}")]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

fn verr(volume: &Volume, message: impl Into<String>) -> VolumeError {
    VolumeError {
        volume: volume.name.clone(),
        message: message.into(),
    }
}

/// A materialised volume.
#[derive(Clone, Debug)]
struct Mounted {
    path: PathBuf,
    /// Kubelet-managed content (configMap, secret, ...) is always mounted read-only.
    force_read_only: bool,
    /// Whether [`PodVolumes::refresh`] rewrites it.
    refreshed: bool,
}

/// The volumes of one pod.
pub struct PodVolumes {
    client: Client,
    layout: Layout,
    namespace: String,
    pod_name: String,
    mounted: HashMap<String, Mounted>,
    tokens: TokenCache,
}

impl PodVolumes {
    pub fn new(client: Client, layout: Layout, namespace: &str, pod_name: &str) -> Self {
        PodVolumes {
            client,
            layout,
            namespace: namespace.to_string(),
            pod_name: pod_name.to_string(),
            mounted: HashMap::new(),
            tokens: TokenCache::default(),
        }
    }

    /// Materialises every volume of the pod; on error nothing may be started yet.
    pub async fn setup(&mut self, pod: &Pod, facts: &PodFacts) -> Result<(), VolumeError> {
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let mounted = self.setup_one(pod, facts, volume).await?;
            self.mounted.insert(volume.name.clone(), mounted);
        }
        Ok(())
    }

    /// Rewrites configMap/secret/downwardAPI/projected volumes from current API data. On error
    /// the old content stays in place (as with the kubelet) and the error is logged.
    pub async fn refresh(&mut self, pod: &Pod, facts: &PodFacts) {
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if !self.mounted.get(&volume.name).is_some_and(|m| m.refreshed) {
                continue;
            }
            if let Err(e) = self.setup_one(pod, facts, volume).await {
                tracing::warn!(pod = %self.pod_name, namespace = %self.namespace, error = %e, "volume refresh failed");
            }
        }
    }

    /// Host paths of the materialised volumes, for building containers' bind mounts.
    pub fn table(&self) -> MountTable {
        MountTable {
            entries: self
                .mounted
                .iter()
                .map(|(name, m)| (name.clone(), (m.path.clone(), m.force_read_only)))
                .collect(),
        }
    }

    /// Removes the pod's volumes (never PVC or hostPath data).
    pub fn cleanup(&mut self) {
        self.mounted.clear();
        let dir = self.layout.volumes_dir(&self.namespace, &self.pod_name);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove pod volumes");
        }
    }

    async fn setup_one(
        &mut self,
        pod: &Pod,
        facts: &PodFacts,
        volume: &Volume,
    ) -> Result<Mounted, VolumeError> {
        let own_dir = self
            .layout
            .volume_dir(&self.namespace, &self.pod_name, &volume.name);
        let projected = |path: PathBuf| Mounted {
            path,
            force_read_only: true,
            refreshed: true,
        };
        if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&own_dir).map_err(|e| verr(volume, e.to_string()))?;
            return Ok(Mounted {
                path: own_dir,
                force_read_only: false,
                refreshed: false,
            });
        }
        if let Some(host) = &volume.host_path {
            return host_path(volume, &host.path, host.type_.as_deref());
        }
        if let Some(pvc) = &volume.persistent_volume_claim {
            return self
                .claim(volume, &pvc.claim_name, pvc.read_only.unwrap_or(false))
                .await;
        }
        if volume.ephemeral.is_some() {
            let claim = format!("{}-{}", self.pod_name, volume.name);
            return self.claim(volume, &claim, false).await;
        }
        let files = if let Some(cm) = &volume.config_map {
            let items = cm.items.as_deref();
            self.key_files(
                volume,
                Kind::ConfigMap,
                &cm.name,
                items,
                cm.default_mode,
                cm.optional,
            )
            .await?
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            let items = secret.items.as_deref();
            self.key_files(
                volume,
                Kind::Secret,
                &name,
                items,
                secret.default_mode,
                secret.optional,
            )
            .await?
        } else if let Some(downward) = &volume.downward_api {
            downward_files(
                volume,
                pod,
                facts,
                downward.items.iter().flatten(),
                downward.default_mode,
            )?
        } else if let Some(proj) = &volume.projected {
            let mut all = Vec::new();
            for source in proj.sources.iter().flatten() {
                all.extend(
                    self.projection(volume, pod, facts, source, proj.default_mode)
                        .await?,
                );
            }
            all
        } else {
            return Err(verr(
                volume,
                "volume type not supported by vigil-testkubelet",
            ));
        };
        files::sync_dir(&own_dir, &files).map_err(|e| verr(volume, e.to_string()))?;
        Ok(projected(own_dir))
    }

    async fn claim(
        &self,
        volume: &Volume,
        claim: &str,
        read_only: bool,
    ) -> Result<Mounted, VolumeError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.namespace);
        let pvc = api
            .get_opt(claim)
            .await
            .map_err(|e| verr(volume, e.to_string()))?
            .ok_or_else(|| verr(volume, format!("persistentvolumeclaim {claim:?} not found")))?;
        let uid = pvc.metadata.uid.unwrap_or_default();
        let dir = self.layout.pvc_dir(&self.namespace, claim);
        let marker = self.layout.pvc_uid_file(&self.namespace, claim);
        let recorded = std::fs::read_to_string(&marker).ok();
        if recorded.as_deref().is_some_and(|r| r != uid) {
            tracing::info!(claim, namespace = %self.namespace, "claim was recreated: discarding the old volume's data");
            std::fs::remove_dir_all(&dir).map_err(|e| verr(volume, e.to_string()))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| verr(volume, e.to_string()))?;
        if recorded.as_deref() != Some(uid.as_str()) {
            layout::write_atomic(&marker, uid.as_bytes())
                .map_err(|e| verr(volume, e.to_string()))?;
        }
        Ok(Mounted {
            path: dir,
            force_read_only: read_only,
            refreshed: false,
        })
    }

    /// Files of a ConfigMap/Secret: all keys, or the listed `items`.
    async fn key_files(
        &self,
        volume: &Volume,
        kind: Kind,
        name: &str,
        items: Option<&[KeyToPath]>,
        default_mode: Option<i32>,
        optional: Option<bool>,
    ) -> Result<Vec<FileSpec>, VolumeError> {
        let data = objects::fetch(&self.client, &self.namespace, kind, name)
            .await
            .map_err(|e| verr(volume, e.to_string()))?;
        let optional = optional.unwrap_or(false);
        let Some(data) = data else {
            return if optional {
                Ok(Vec::new())
            } else {
                Err(verr(volume, format!("{} {name:?} not found", kind.lower())))
            };
        };
        let default_mode = mode(default_mode, None);
        let Some(items) = items.filter(|i| !i.is_empty()) else {
            return Ok(data
                .into_iter()
                .map(|(key, bytes)| FileSpec {
                    path: key,
                    data: bytes,
                    mode: default_mode,
                })
                .collect());
        };
        let mut out = Vec::new();
        for item in items {
            match data.get(&item.key) {
                Some(bytes) => out.push(FileSpec {
                    path: item.path.clone(),
                    data: bytes.clone(),
                    mode: mode(item.mode, Some(default_mode)),
                }),
                None if optional => {}
                None => {
                    return Err(verr(
                        volume,
                        format!("{} references non-existent key: {}", kind.lower(), item.key),
                    ));
                }
            }
        }
        Ok(out)
    }

    async fn projection(
        &mut self,
        volume: &Volume,
        pod: &Pod,
        facts: &PodFacts,
        source: &VolumeProjection,
        default_mode: Option<i32>,
    ) -> Result<Vec<FileSpec>, VolumeError> {
        let key_source = match (&source.config_map, &source.secret) {
            (Some(cm), _) => Some((Kind::ConfigMap, &cm.name, &cm.items, cm.optional)),
            (None, Some(s)) => Some((Kind::Secret, &s.name, &s.items, s.optional)),
            (None, None) => None,
        };
        if let Some((kind, name, items, optional)) = key_source {
            return self
                .key_files(volume, kind, name, items.as_deref(), default_mode, optional)
                .await;
        }
        if let Some(downward) = &source.downward_api {
            return downward_files(
                volume,
                pod,
                facts,
                downward.items.iter().flatten(),
                default_mode,
            );
        }
        if let Some(sat) = &source.service_account_token {
            let token = self
                .tokens
                .token(&self.client, pod, sat)
                .await
                .map_err(|e| verr(volume, format!("failed to fetch token: {e}")))?;
            return Ok(vec![FileSpec {
                path: sat.path.clone(),
                data: token.into_bytes(),
                mode: mode(default_mode, None),
            }]);
        }
        Err(verr(
            volume,
            "projected source type not supported by vigil-testkubelet",
        ))
    }
}

/// Volume name -> (host path, always read-only), fixed once the pod's volumes are set up.
#[derive(Clone, Debug, Default)]
pub struct MountTable {
    entries: HashMap<String, (PathBuf, bool)>,
}

impl MountTable {
    /// Bind mounts for a container's volumeMounts. `env` expands `subPathExpr`.
    pub fn mounts_for(
        &self,
        container: &Container,
        env: &EnvList,
    ) -> Result<Vec<BindMount>, String> {
        let mut out = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let (path, force_read_only) = self.entries.get(&vm.name).ok_or_else(|| {
                format!("volumeMount {:?} refers to no volume of the pod", vm.name)
            })?;
            let sub = match (&vm.sub_path, &vm.sub_path_expr) {
                (Some(p), _) if !p.is_empty() => Some(p.clone()),
                (_, Some(e)) if !e.is_empty() => Some(env.expand(e)),
                _ => None,
            };
            let source = match sub {
                Some(sub) => {
                    let rel = Path::new(&sub);
                    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                        return Err(format!("invalid subPath {sub:?}"));
                    }
                    let source = path.join(rel);
                    // The kubelet creates a missing subPath as a directory.
                    if !source.exists() {
                        std::fs::create_dir_all(&source)
                            .map_err(|e| format!("subPath {sub:?}: {e}"))?;
                    }
                    source
                }
                None => path.clone(),
            };
            out.push(BindMount {
                source,
                target: PathBuf::from(&vm.mount_path),
                read_only: vm.read_only.unwrap_or(false) || *force_read_only,
            });
        }
        Ok(out)
    }
}

/// File mode from the API's decimal int (`420` = 0644), Kubernetes' default being 0644.
fn mode(explicit: Option<i32>, fallback: Option<u32>) -> u32 {
    explicit
        .map(|m| (m as u32) & 0o7777)
        .or(fallback)
        .unwrap_or(0o644)
}

fn downward_files<'a>(
    volume: &Volume,
    pod: &Pod,
    facts: &PodFacts,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    default_mode: Option<i32>,
) -> Result<Vec<FileSpec>, VolumeError> {
    let default_mode = mode(default_mode, None);
    items
        .map(|item| {
            let value = if let Some(f) = &item.field_ref {
                fieldpath::field(pod, facts, &f.field_path, true)
            } else if let Some(r) = &item.resource_field_ref {
                fieldpath::resource(pod, facts, None, r)
            } else {
                return Err(verr(
                    volume,
                    format!("downwardAPI item {:?} has no source", item.path),
                ));
            }
            .map_err(|e| verr(volume, e.to_string()))?;
            Ok(FileSpec {
                path: item.path.clone(),
                data: value.into_bytes(),
                mode: mode(item.mode, Some(default_mode)),
            })
        })
        .collect()
}

fn host_path(volume: &Volume, path: &str, kind: Option<&str>) -> Result<Mounted, VolumeError> {
    let p = PathBuf::from(path);
    let fail = |m: String| verr(volume, m);
    match kind.unwrap_or("") {
        "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(|e| fail(e.to_string()))?,
        "FileOrCreate" => {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| fail(e.to_string()))?;
        }
        "Directory" if !p.is_dir() => {
            return Err(fail(format!(
                "hostPath type check failed: {path} is not a directory"
            )));
        }
        "File" if !p.is_file() => {
            return Err(fail(format!(
                "hostPath type check failed: {path} is not a file"
            )));
        }
        _ => {}
    }
    if !p.exists() {
        return Err(fail(format!("hostPath {path} does not exist")));
    }
    Ok(Mounted {
        path: p,
        force_read_only: false,
        refreshed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode(None, None), 0o644);
        assert_eq!(mode(Some(420), None), 0o644);
        assert_eq!(mode(Some(0o400), Some(0o644)), 0o400);
        assert_eq!(mode(None, Some(0o600)), 0o600);
    }
}
