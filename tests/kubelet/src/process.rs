//! Spawning and signalling container processes.
//!
//! A "container" is a process group led by the command's process, in its own private mount
//! namespace where each volumeMount is bind-mounted at its mountPath. The leader's exit ends the
//! container: whatever else is left in its group is killed, as a container runtime kills the
//! rest of a PID namespace when its first process dies.
//!
//! Everything that runs between fork and exec (the `pre_exec` closures) is limited to raw
//! syscalls on data prepared beforehand: the stand-in is multi-threaded, and allocating after
//! fork could deadlock on a lock held by another thread at fork time.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::command::Program;

/// One volumeMount, resolved to a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// What to start.
pub struct Launch<'a> {
    pub program: &'a Program,
    pub env: &'a [(String, String)],
    pub working_dir: Option<&'a Path>,
}

/// A mount prepared for use after fork: only C strings and flags.
struct PreparedMount {
    source: CString,
    target: CString,
    /// Directories to create, outermost first, before mounting (the mount point itself for a
    /// directory source; its parents for a file source).
    mkdirs: Vec<CString>,
    /// A file source needs a file to bind onto.
    create_file: bool,
    read_only: bool,
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn prepare_mounts(mounts: &[BindMount]) -> io::Result<Vec<PreparedMount>> {
    let mut sorted: Vec<&BindMount> = mounts.iter().collect();
    // Parents before children, so that /etc/redis/conf lands inside an /etc/redis volume.
    sorted.sort_by_key(|m| m.target.components().count());
    sorted
        .into_iter()
        .map(|m| {
            if !m.target.is_absolute() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("mountPath {} is not absolute", m.target.display()),
                ));
            }
            let is_file = std::fs::metadata(&m.source)?.is_file();
            let mut dirs: Vec<&Path> = m.target.ancestors().skip(1).collect();
            dirs.reverse();
            if !is_file {
                dirs.push(&m.target);
            }
            Ok(PreparedMount {
                source: cstring(&m.source)?,
                target: cstring(&m.target)?,
                mkdirs: dirs
                    .into_iter()
                    .filter(|d| d.parent().is_some())
                    .map(cstring)
                    .collect::<io::Result<_>>()?,
                create_file: is_file,
                read_only: m.read_only,
            })
        })
        .collect()
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Asks the kernel to SIGKILL the child when the stand-in dies, so that a SIGKILLed stand-in
/// leaves no container leaders behind.
///
/// Must run in `pre_exec`. The death signal is tied to the thread that forked; tokio spawns on
/// the calling worker thread, and worker threads live as long as the runtime, so this holds.
/// Never spawn from `spawn_blocking` threads, which exit when idle.
fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl/getppid are async-signal-safe syscalls without pointers.
    unsafe {
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        // The parent may have died between fork and prctl; then the signal would never come.
        if libc::getppid() != parent {
            return Err(io::Error::other("parent exited during spawn"));
        }
    }
    Ok(())
}

/// Creates a private mount namespace and bind-mounts the volumes. Runs in `pre_exec`.
fn enter_private_mounts(mounts: &[PreparedMount]) -> io::Result<()> {
    // SAFETY: raw syscalls on C strings that outlive the call; no allocation happens here.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        // Without this, our bind mounts would propagate back to the host's shared mounts.
        check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for m in mounts {
            for dir in &m.mkdirs {
                // EEXIST is the common case; a real failure surfaces at mount time.
                libc::mkdir(dir.as_ptr(), 0o755);
            }
            if m.create_file {
                let fd = libc::open(
                    m.target.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            check(libc::mount(
                m.source.as_ptr(),
                m.target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            if m.read_only {
                // A bind mount only becomes read-only through a remount.
                check(libc::mount(
                    std::ptr::null(),
                    m.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                ))?;
            }
        }
    }
    Ok(())
}

fn change_dir(dir: Option<&CString>) -> io::Result<()> {
    if let Some(dir) = dir {
        // SAFETY: chdir on a valid C string.
        check(unsafe { libc::chdir(dir.as_ptr()) })?;
    }
    Ok(())
}

fn base_command(launch: &Launch<'_>) -> Command {
    let mut cmd = Command::new(&launch.program.path);
    cmd.args(&launch.program.args)
        .env_clear()
        .envs(
            launch
                .env
                .iter()
                .map(|(k, v)| (OsStr::new(k), OsStr::new(v))),
        )
        .stdin(Stdio::null())
        // Own process group: the group id equals the leader's PID, which lets us (and tests,
        // with `kill -- -PID`) signal the whole container.
        .process_group(0)
        .kill_on_drop(false);
    cmd
}

/// Starts a container process with its volumes mounted, output appended to `log`.
pub fn spawn_container(launch: &Launch<'_>, mounts: &[BindMount], log: &File) -> io::Result<Child> {
    let prepared = prepare_mounts(mounts)?;
    // The working directory is entered after the mounts, so a workingDir inside a volume is the
    // volume and not the directory underneath it.
    let cwd = launch.working_dir.map(cstring).transpose()?;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = base_command(launch);
    cmd.stdout(log.try_clone()?).stderr(log.try_clone()?);
    // SAFETY: the closure only performs syscalls on data prepared above (see module comment).
    unsafe {
        cmd.pre_exec(move || {
            die_with_parent(parent)?;
            enter_private_mounts(&prepared)?;
            change_dir(cwd.as_ref())
        });
    }
    cmd.spawn()
}

/// Starts a helper command (exec probe or hook) inside the mount namespace of container process
/// `ns_pid`, so it sees the same files the container does. Output is captured.
pub fn spawn_in_container(launch: &Launch<'_>, ns_pid: u32) -> io::Result<Child> {
    let ns: OwnedFd = File::open(format!("/proc/{ns_pid}/ns/mnt"))?.into();
    let cwd = launch.working_dir.map(cstring).transpose()?;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = base_command(launch);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: setns/chdir/prctl on a descriptor and string prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            die_with_parent(parent)?;
            check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS))?;
            change_dir(cwd.as_ref())
        });
    }
    cmd.spawn()
}

/// Sends `signal` to one process. A process that is already gone is not an error.
pub fn signal_pid(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Sends `signal` to a whole process group (a container).
pub fn signal_group(pgid: u32, signal: libc::c_int) {
    if pgid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; pgid > 1 never targets everyone.
        unsafe {
            libc::kill(-(pgid as libc::pid_t), signal);
        }
    }
}

/// Exit code and terminating signal as Kubernetes reports them: a signal death is exit code
/// 128 + signal (137 for SIGKILL).
pub fn exit_info(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (255, None),
    }
}

/// Waits for a helper (probe/hook) up to `timeout`; on timeout its whole group is killed.
/// Returns its exit status and combined output, or `None` on timeout.
pub async fn run_to_completion(child: Child, timeout: Duration) -> Option<(ExitStatus, String)> {
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Some((out.status, text))
        }
        Ok(Err(_)) => None,
        Err(_) => {
            if let Some(pid) = pid {
                signal_group(pid, libc::SIGKILL);
            }
            None
        }
    }
}

/// Kills leftovers of a previous stand-in run: processes in the group recorded by a pid file
/// that live in another mount namespace than ours (container processes always do, which keeps
/// an unrelated process that reused the number safe).
pub fn kill_stale_group(pgid: u32) -> usize {
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").ok();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_pgrp(&stat) != Some(pgid) {
            continue;
        }
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        if ns.is_some() && ns != own_ns {
            signal_pid(pid, libc::SIGKILL);
            killed += 1;
        }
    }
    killed
}

/// The process group field of /proc/PID/stat ("pid (comm) state ppid pgrp ..."); comm may
/// contain spaces and parentheses, so parsing starts after the last ')'.
fn stat_pgrp(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat() {
        assert_eq!(stat_pgrp("123 (redis server) S 1 456 456 0"), Some(456));
        assert_eq!(stat_pgrp("123 (a) b) S 1 77 77"), Some(77));
        assert_eq!(stat_pgrp("garbage"), None);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_info(ExitStatus::from_raw(0)), (0, None));
        assert_eq!(exit_info(ExitStatus::from_raw(3 << 8)), (3, None));
        assert_eq!(exit_info(ExitStatus::from_raw(9)), (137, Some(9)));
    }

    #[test]
    fn mounts_are_ordered_and_prepared() {
        let dir =
            std::env::temp_dir().join(format!("vigil-testkubelet-mnt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        let mounts = vec![
            BindMount {
                source: file.clone(),
                target: "/etc/redis/conf/redis.conf".into(),
                read_only: true,
            },
            BindMount {
                source: dir.clone(),
                target: "/etc/redis".into(),
                read_only: false,
            },
        ];
        let prepared = prepare_mounts(&mounts).unwrap();
        assert_eq!(prepared[0].target.as_bytes(), b"/etc/redis");
        assert!(!prepared[0].create_file);
        let dirs: Vec<&[u8]> = prepared[0].mkdirs.iter().map(|c| c.as_bytes()).collect();
        assert_eq!(dirs, vec![&b"/etc"[..], b"/etc/redis"]);
        assert!(prepared[1].create_file && prepared[1].read_only);
        let dirs: Vec<&[u8]> = prepared[1].mkdirs.iter().map(|c| c.as_bytes()).collect();
        assert_eq!(dirs, vec![&b"/etc"[..], b"/etc/redis", b"/etc/redis/conf"]);
    }
}
