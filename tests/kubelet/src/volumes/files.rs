//! Writing a volume's set of files into its directory, the way the kubelet's atomic writer
//! keeps ConfigMap/Secret volumes current: changed files are replaced by rename (a reader sees
//! the old or the new content, never a torn write), vanished keys are removed, unchanged files
//! are left alone (no needless inotify noise).
//!
//! Difference from the kubelet: each file is replaced atomically on its own; the kubelet swaps
//! the whole set at once through a `..data` symlink. Nothing we run depends on cross-file
//! atomicity.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::layout::temp_name;

/// One file of a projected volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// Relative path inside the volume (`items[].path`).
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Rejects absolute paths and `..`: a key must not escape its volume.
fn safe_relative(path: &str) -> io::Result<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid volume file path {path:?}"),
        ));
    }
    Ok(p.to_path_buf())
}

/// Makes `dir` hold exactly `files`.
pub fn sync_dir(dir: &Path, files: &[FileSpec]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut wanted = BTreeSet::new();
    for file in files {
        let rel = safe_relative(&file.path)?;
        let full = dir.join(&rel);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let current = std::fs::read(&full).ok();
        let current_mode = std::fs::metadata(&full)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777);
        if current.as_deref() != Some(file.data.as_slice()) || current_mode != Some(file.mode) {
            let tmp = temp_name(&full);
            std::fs::write(&tmp, &file.data)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(file.mode))?;
            std::fs::rename(&tmp, &full)?;
        }
        wanted.insert(full);
    }
    remove_unwanted(dir, &wanted)?;
    Ok(())
}

/// Removes files not in `wanted` and directories left empty; returns whether `dir` is now empty.
fn remove_unwanted(dir: &Path, wanted: &BTreeSet<PathBuf>) -> io::Result<bool> {
    let mut empty = true;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if remove_unwanted(&path, wanted)? {
                std::fs::remove_dir(&path)?;
            } else {
                empty = false;
            }
        } else if wanted.contains(&path) {
            empty = false;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, data: &str, mode: u32) -> FileSpec {
        FileSpec {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn writes_updates_and_prunes() {
        let dir =
            std::env::temp_dir().join(format!("vigil-testkubelet-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        sync_dir(&dir, &[spec("a", "1", 0o644), spec("sub/b", "2", 0o600)]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        let mode = std::fs::metadata(dir.join("sub/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        sync_dir(&dir, &[spec("a", "changed", 0o644)]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "changed");
        assert!(
            !dir.join("sub").exists(),
            "removed key and its empty directory"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp files left behind: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_escaping_paths() {
        let dir = std::env::temp_dir();
        assert!(sync_dir(&dir.join("x-never"), &[spec("../evil", "", 0o644)]).is_err());
        assert!(sync_dir(&dir.join("x-never"), &[spec("/etc/passwd", "", 0o644)]).is_err());
        let _ = std::fs::remove_dir_all(dir.join("x-never"));
    }
}
