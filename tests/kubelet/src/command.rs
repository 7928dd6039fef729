//! Which program a container runs.
//!
//! There are no images here: the `--bin-dir` directories stand in for the image filesystem.
//! `command[0]` is looked up by its basename in the bin dirs first (so `/usr/local/bin/vigil`
//! runs `<bin-dir>/vigil`), then as written if it is a path that exists, then in the stand-in's
//! `PATH`. A container without `command` would run its image's entrypoint, which we cannot know;
//! by convention the image's repository basename is looked up in the bin dirs (`ghcr.io/x/vigil:1`
//! -> `<bin-dir>/vigil`), with `args` as its arguments.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::env::EnvList;

/// A program and its arguments (argv[1..]), ready to spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommandError {
    #[error("executable {0:?} not found in the bin dirs or PATH")]
    NotFound(String),
    #[error(
        "container has no command and no executable named after image {image:?} ({name:?}) is in the bin dirs"
    )]
    NoEntrypoint { image: String, name: String },
}

/// Resolves the program for a container; `command` and `args` are `$(VAR)`-expanded against
/// `env` first, as Kubernetes does.
pub fn resolve(
    command: &[String],
    args: &[String],
    image: &str,
    env: &EnvList,
    bin_dirs: &[PathBuf],
    search_path: &str,
) -> Result<Program, CommandError> {
    let command: Vec<String> = command.iter().map(|c| env.expand(c)).collect();
    let args: Vec<String> = args.iter().map(|a| env.expand(a)).collect();
    match command.split_first() {
        Some((first, rest)) => {
            let path = find(first, bin_dirs, search_path)
                .ok_or_else(|| CommandError::NotFound(first.clone()))?;
            Ok(Program {
                path,
                args: rest.iter().cloned().chain(args).collect(),
            })
        }
        None => {
            let name = image_basename(image);
            let path = bin_dirs
                .iter()
                .map(|d| d.join(&name))
                .find(|p| is_executable(p))
                .ok_or_else(|| CommandError::NoEntrypoint {
                    image: image.to_string(),
                    name: name.clone(),
                })?;
            Ok(Program { path, args })
        }
    }
}

/// Finds an executable: basename in the bin dirs, then the literal path, then `PATH`.
pub fn find(name: &str, bin_dirs: &[PathBuf], search_path: &str) -> Option<PathBuf> {
    let base = Path::new(name).file_name()?;
    if let Some(found) = bin_dirs
        .iter()
        .map(|d| d.join(base))
        .find(|p| is_executable(p))
    {
        return Some(found);
    }
    if name.contains('/') && is_executable(Path::new(name)) {
        return Some(PathBuf::from(name));
    }
    std::env::split_paths(search_path)
        .map(|d| d.join(base))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `registry:5000/org/redis-server:7@sha256:...` -> `redis-server`.
fn image_basename(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn bin_dir(names: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vigil-testkubelet-cmd-{}-{}",
            std::process::id(),
            names.join("-")
        ));
        fs::create_dir_all(&dir).unwrap();
        for name in names {
            let p = dir.join(name);
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn basename_in_bin_dir_wins() {
        let dir = bin_dir(&["vigil"]);
        let p = resolve(
            &strings(&["/usr/local/bin/vigil", "agent"]),
            &strings(&["--port", "$(PORT)"]),
            "x",
            &{
                let mut e = EnvList::default();
                e.set("PORT", "6379".into());
                e
            },
            std::slice::from_ref(&dir),
            "",
        )
        .unwrap();
        assert_eq!(p.path, dir.join("vigil"));
        assert_eq!(p.args, strings(&["agent", "--port", "6379"]));
    }

    #[test]
    fn falls_back_to_path_and_literal() {
        // No bin dirs, so only the literal path and PATH remain.
        let without_bin_dirs = |command: &[&str], search_path: &str| {
            resolve(
                &strings(command),
                &[],
                "x",
                &EnvList::default(),
                &[],
                search_path,
            )
        };
        let p = without_bin_dirs(&["sh", "-c", "true"], "/bin:/usr/bin").unwrap();
        assert!(p.path.ends_with("sh"));
        let p = without_bin_dirs(&["/bin/sh"], "").unwrap();
        assert_eq!(p.path, PathBuf::from("/bin/sh"));
        let err = without_bin_dirs(&["no-such-binary-xyz"], "/bin").unwrap_err();
        assert_eq!(err, CommandError::NotFound("no-such-binary-xyz".into()));
    }

    #[test]
    fn entrypoint_from_image_name() {
        let dir = bin_dir(&["redis-server"]);
        let p = resolve(
            &[],
            &strings(&["--port", "7000"]),
            "registry:5000/library/redis-server:7.2@sha256:abc",
            &EnvList::default(),
            std::slice::from_ref(&dir),
            "",
        )
        .unwrap();
        assert_eq!(p.path, dir.join("redis-server"));
        assert_eq!(p.args, strings(&["--port", "7000"]));
        assert!(resolve(&[], &[], "busybox", &EnvList::default(), &[dir], "/bin").is_err());
    }
}
