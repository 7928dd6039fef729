//! `kubectl vigil backup`: creates a `RedisBackup` of a replication and, with `--wait`, follows
//! it to its end, showing the bytes uploaded as it goes.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use super::{Error, Session};
use crate::api::{BackupPhase, RedisBackup, RedisBackupSpec, RedisBackupStatus};

const POLL: Duration = Duration::from_millis(500);

/// Creates the backup (named `<replication>-<UTC time>` unless `name` is given); returns its
/// name.
pub async fn request(
    session: &Session,
    replication: &str,
    name: Option<&str>,
) -> Result<String, Error> {
    // The replication must exist: a typo fails here, not as a Failed backup.
    session.replication(replication).await?;
    let name = name.map_or_else(
        || {
            format!(
                "{replication}-{}",
                Timestamp::now().strftime("%Y%m%d%H%M%S")
            )
        },
        str::to_string,
    );
    let backup = RedisBackup {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        spec: RedisBackupSpec {
            replication: replication.to_string(),
            target: None,
        },
        status: None,
    };
    Api::<RedisBackup>::namespaced(session.client.clone(), &session.namespace)
        .create(&PostParams::default(), &backup)
        .await
        .map_err(|source| Error::Api {
            what: format!("creating RedisBackup {name}"),
            source,
        })?;
    eprintln!("redisbackup {name} created");
    Ok(name)
}

/// Follows backup `name` until it completes (prints where it is), fails, or `timeout` passes.
pub async fn wait(session: &Session, name: &str, timeout: Duration) -> Result<(), Error> {
    let api = Api::<RedisBackup>::namespaced(session.client.clone(), &session.namespace);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let backup = api.get(name).await.map_err(|source| Error::Api {
            what: format!("reading RedisBackup {name}"),
            source,
        })?;
        let status = backup.status.unwrap_or_default();
        match progress(&status) {
            Ok(Some(done)) => {
                println!("{done}");
                return Ok(());
            }
            Ok(None) => {}
            Err(why) => return Err(Error::Refused(format!("backup {name} failed: {why}"))),
        }
        let line = describe(&status);
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if started.elapsed() > timeout {
            return Err(Error::Timeout {
                seconds: timeout.as_secs(),
                what: format!("backup {name} to complete ({last})"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Pure: the outcome once there is one.
fn progress(status: &RedisBackupStatus) -> Result<Option<String>, String> {
    match status.phase {
        Some(BackupPhase::Completed) => Ok(Some(format!(
            "completed: {} bytes from {} in s3://{}/{} (sha256 {})",
            status.bytes,
            status.source.as_deref().unwrap_or("?"),
            status
                .object_store
                .as_ref()
                .map_or("?", |s| s.bucket.as_str()),
            status.path.as_deref().unwrap_or("?"),
            status.sha256.as_deref().unwrap_or("?"),
        ))),
        Some(BackupPhase::Failed) => Err(status
            .error
            .clone()
            .unwrap_or_else(|| "no reason given".into())),
        _ => Ok(None),
    }
}

/// Pure: one line on where a backup stands.
fn describe(status: &RedisBackupStatus) -> String {
    match (status.phase, &status.error) {
        (Some(BackupPhase::Running), _) => format!(
            "running (attempt {}): {:.1} MB uploaded from {}",
            status.attempts,
            status.bytes as f64 / 1e6,
            status.source.as_deref().unwrap_or("?"),
        ),
        (_, Some(error)) => format!("pending: {error}"),
        _ => "pending: waiting for the operator".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_reads_as_it_goes() {
        let mut status = RedisBackupStatus::default();
        assert_eq!(describe(&status), "pending: waiting for the operator");
        status.phase = Some(BackupPhase::Running);
        status.attempts = 1;
        status.bytes = 12_345_678;
        status.source = Some("cache-1".into());
        assert_eq!(
            describe(&status),
            "running (attempt 1): 12.3 MB uploaded from cache-1"
        );
        assert_eq!(progress(&status), Ok(None));
        status.phase = Some(BackupPhase::Failed);
        status.error = Some("no instance".into());
        assert_eq!(progress(&status), Err("no instance".to_string()));
        status.phase = Some(BackupPhase::Completed);
        let done = progress(&status).expect("done").expect("a line");
        assert!(
            done.starts_with("completed: 12345678 bytes from cache-1"),
            "{done}"
        );
    }
}
