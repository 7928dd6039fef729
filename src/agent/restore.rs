//! Restoring `spec.bootstrap.backup` into the first instance before its server starts: the
//! snapshot is downloaded next to the data directory's `dump.rdb`, checked against the
//! manifest's SHA-256 and only then renamed into place. Anything short of that stops the agent
//! with the reason (the pod's termination message), so the instance never serves empty data as
//! if it were the backup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::info;

use super::Settings;
use crate::api::{Persistence, RedisReplicationStatus, RestorePhase, RestoreSource};
use crate::backup::store::{self, Keys, Store};
use crate::redis::InstanceClient;
use crate::resources::pod_ordinal;

/// Written into the data directory once a snapshot is in place: the SHA-256 it had.
const MARKER: &str = ".vigil-restored";
/// The server's files, as redis.conf names them (defaults the operator never changes).
const RDB_FILE: &str = "dump.rdb";
const AOF_DIR: &str = "appendonlydir";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "restore: the restore credentials are not in the pod's environment (the Secret {0} or \
         its keys are missing)"
    )]
    NoKeys(String),
    #[error(
        "restore: {0} already holds data that was not restored from this backup; it is left as \
         it is: remove the claim to restore into it, or remove spec.bootstrap by creating the \
         set anew"
    )]
    DataPresent(PathBuf),
    #[error("restore: {0}")]
    Store(#[from] store::Error),
    #[error("restore: cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the boot does about a restore.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to restore here: boot as usual.
    None,
    /// The snapshot is in place. With `enable_aof`, the server first loads it with the AOF off
    /// (a server with the AOF on ignores an RDB) and turns the AOF on once it has.
    Restored { enable_aof: bool },
}

/// Restores the snapshot when this is the first instance of a set being restored and it has not
/// been done yet.
pub async fn prepare(
    settings: &Settings,
    status: Option<&RedisReplicationStatus>,
    persistence: Persistence,
) -> Result<Outcome, Error> {
    let Some(restore) = status.and_then(|s| s.restore.as_ref()) else {
        return Ok(Outcome::None);
    };
    let (Some(source), Some(0)) = (
        &restore.source,
        pod_ordinal(&settings.replication, &settings.pod_name),
    ) else {
        return Ok(Outcome::None);
    };
    let dir = &settings.data_dir;
    let restored = Outcome::Restored {
        // Until the server has written its first AOF, the RDB is what holds the data.
        enable_aof: persistence == Persistence::Aof && !dir.join(AOF_DIR).exists(),
    };
    let marker = std::fs::read_to_string(dir.join(MARKER)).unwrap_or_default();
    if marker.trim() == source.sha256 {
        return Ok(restored);
    }
    if restore.phase == RestorePhase::Completed {
        // The set runs; a replaced first instance refills from the master like any other.
        return Ok(Outcome::None);
    }
    for existing in [RDB_FILE, AOF_DIR] {
        if dir.join(existing).exists() {
            return Err(Error::DataPresent(dir.clone()));
        }
    }
    let keys = settings
        .restore_keys
        .as_ref()
        .ok_or_else(|| Error::NoKeys(source.object_store.credentials.name.clone()))?;
    download(source, keys, dir).await?;
    Ok(restored)
}

async fn download(source: &RestoreSource, keys: &Keys, dir: &Path) -> Result<(), Error> {
    let store = Store::new(&source.object_store, keys)?;
    let manifest = store.manifest(&source.path).await?;
    info!(path = %source.path, bytes = manifest.bytes, "restoring the backup");
    store
        .download(&source.path, &manifest, &dir.join(RDB_FILE))
        .await?;
    let marker = dir.join(MARKER);
    std::fs::write(&marker, &manifest.sha256).map_err(|source| Error::Io {
        path: marker,
        source,
    })?;
    info!(sha256 = %manifest.sha256, "backup restored; starting the server on it");
    Ok(())
}

/// Turns the AOF on once the server has loaded the restored RDB: the server writes its first
/// AOF from memory, after which it boots from that.
pub async fn enable_aof(settings: &Settings) {
    let mut delay = Duration::from_millis(200);
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        let Ok(mut client) = InstanceClient::connect_local(
            &settings.socket(),
            settings.password.as_deref(),
            Duration::from_secs(2),
        )
        .await
        else {
            continue;
        };
        match client.config_set("appendonly", "yes").await {
            Ok(()) => {
                info!("the restored data is loaded; the AOF is on");
                return;
            }
            // LOADING: not yet.
            Err(e) => tracing::debug!(error = %e, "cannot turn the AOF on yet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RestoreStatus;

    fn settings(dir: &Path, pod: &str) -> Settings {
        Settings {
            replication: "cache".into(),
            namespace: "ns".into(),
            pod_name: pod.into(),
            pod_ip: "10.0.0.1".into(),
            password: None,
            data_dir: dir.to_path_buf(),
            run_dir: dir.join("run"),
            user_config: dir.join("user.conf"),
            server_binary: None,
            probe_port: 8080,
            stop_timeout: Duration::from_secs(1),
            switchover_wait: Duration::from_secs(1),
            tls: None,
            restore_keys: None,
        }
    }

    fn status(phase: RestorePhase) -> RedisReplicationStatus {
        let source: RestoreSource = serde_json::from_value(serde_json::json!({
            "objectStore": {"endpoint": "http://127.0.0.1:1", "bucket": "backups", "credentials": {"name": "s3"}},
            "path": "ns/cache/b1", "bytes": 10, "sha256": "abc",
        }))
        .expect("valid source");
        RedisReplicationStatus {
            restore: Some(RestoreStatus {
                phase,
                source: Some(source),
                keys: None,
                completed_at: None,
                error: None,
            }),
            ..RedisReplicationStatus::default()
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-restore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[tokio::test]
    async fn only_the_first_instance_restores() {
        let dir = temp_dir("first");
        let st = status(RestorePhase::Running);
        let outcome = prepare(&settings(&dir, "cache-1"), Some(&st), Persistence::Rdb).await;
        assert!(matches!(outcome, Ok(Outcome::None)));
        let outcome = prepare(&settings(&dir, "cache-0"), Some(&st), Persistence::Rdb).await;
        assert!(
            matches!(outcome, Err(Error::NoKeys(ref s)) if s == "s3"),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn data_not_from_the_backup_is_never_overwritten() {
        let dir = temp_dir("present");
        std::fs::write(dir.join(RDB_FILE), b"REDIS0011").expect("rdb");
        let st = status(RestorePhase::Failed);
        let outcome = prepare(&settings(&dir, "cache-0"), Some(&st), Persistence::Rdb).await;
        assert!(matches!(outcome, Err(Error::DataPresent(_))), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_done_restore_boots_from_its_data_and_turns_the_aof_on_once() {
        let dir = temp_dir("done");
        std::fs::write(dir.join(RDB_FILE), b"REDIS0011").expect("rdb");
        std::fs::write(dir.join(MARKER), "abc").expect("marker");
        let st = status(RestorePhase::Running);
        let s = settings(&dir, "cache-0");
        let outcome = prepare(&s, Some(&st), Persistence::Aof)
            .await
            .expect("restored");
        assert_eq!(outcome, Outcome::Restored { enable_aof: true });
        std::fs::create_dir(dir.join(AOF_DIR)).expect("aof dir");
        let outcome = prepare(&s, Some(&st), Persistence::Aof)
            .await
            .expect("restored");
        assert_eq!(outcome, Outcome::Restored { enable_aof: false });
        let done = status(RestorePhase::Completed);
        std::fs::remove_file(dir.join(MARKER)).expect("no marker");
        let outcome = prepare(&s, Some(&done), Persistence::Aof)
            .await
            .expect("boot");
        assert_eq!(outcome, Outcome::None);
    }
}
