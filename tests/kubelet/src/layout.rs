//! Where things live under `--state-dir`. Tests read these paths, so they are a contract:
//!
//! ```text
//! STATE_DIR/pods/<ns>/<pod>/ip                    the pod's 127.0.0.N address
//! STATE_DIR/pods/<ns>/<pod>/<container>.pid       PID (= process group id) of the running container
//! STATE_DIR/pods/<ns>/<pod>/logs/<container>.log  stdout+stderr, appended across restarts
//! STATE_DIR/pods/<ns>/<pod>/volumes/<volume>/     materialised volumes (removed with the pod)
//! STATE_DIR/pvc/<ns>/<claim>/                     PersistentVolumeClaim data (outlives pods)
//! ```

use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Layout { root }
    }

    pub fn pods_root(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn pod_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        self.pods_root().join(namespace).join(pod)
    }

    pub fn ip_file(&self, namespace: &str, pod: &str) -> PathBuf {
        self.pod_dir(namespace, pod).join("ip")
    }

    pub fn pid_file(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.pod_dir(namespace, pod)
            .join(format!("{container}.pid"))
    }

    pub fn log_file(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.pod_dir(namespace, pod)
            .join("logs")
            .join(format!("{container}.log"))
    }

    pub fn volumes_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        self.pod_dir(namespace, pod).join("volumes")
    }

    pub fn volume_dir(&self, namespace: &str, pod: &str, volume: &str) -> PathBuf {
        self.volumes_dir(namespace, pod).join(volume)
    }

    pub fn pvc_dir(&self, namespace: &str, claim: &str) -> PathBuf {
        self.root.join("pvc").join(namespace).join(claim)
    }

    /// Records which PVC object (by UID) a claim directory belongs to, beside it so that the
    /// container never sees it.
    pub fn pvc_uid_file(&self, namespace: &str, claim: &str) -> PathBuf {
        self.root
            .join("pvc")
            .join(namespace)
            .join(format!(".{claim}.uid"))
    }

    /// All pid files currently on disk (used at startup to kill leftovers of a previous run).
    pub fn all_pid_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for ns in read_dirs(&self.pods_root()) {
            for pod in read_dirs(&ns) {
                let Ok(entries) = std::fs::read_dir(&pod) else {
                    continue;
                };
                found.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "pid")),
                );
            }
        }
        found
    }
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Writes a small file atomically (temp file + rename), so a test reading it never sees a
/// half-written value.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = temp_name(path);
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// A unique sibling name for a temporary file.
pub fn temp_name(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Removes a file, ignoring "not found".
pub fn remove_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove file");
    }
}
