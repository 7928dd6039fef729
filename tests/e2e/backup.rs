//! Backups to a real S3-compatible server (versitygw) and restores from them: the snapshot is
//! taken from a synced replica under write load, a restored set holds every key, a schedule
//! keeps its retained count, a backup survives a failover, and a corrupt or missing backup
//! never starts a set that serves empty data.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use vigil::api::{
    BackupPhase, RedisBackup, RedisBackupStatus, RedisScheduledBackup, RestorePhase, RestoreStatus,
};

use crate::support::s3::ObjectStore;
use crate::support::{Chaos, ReadySet, TestNs, wait_for};

const KEYS: usize = 100_000;
const BACKUP_TIMEOUT: Duration = Duration::from_secs(120);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(180);

/// `spec.backup` pointing at `store` with the credentials Secret `s3`.
fn backup_spec(store: &ObjectStore) -> Value {
    json!({"objectStore": {
        "endpoint": store.endpoint(),
        "bucket": store.bucket(),
        "path": "vigil",
        "credentials": {"name": "s3"},
    }})
}

async fn create_backup(t: &TestNs, name: &str, spec: Value) {
    let backup: RedisBackup = serde_json::from_value(json!({
        "apiVersion": "redis.vigil.dev/v1alpha1", "kind": "RedisBackup",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a RedisBackup");
    Api::<RedisBackup>::namespaced(t.admin.clone(), &t.name)
        .create(&PostParams::default(), &backup)
        .await
        .unwrap_or_else(|e| panic!("create RedisBackup {name}: {e}"));
}

async fn wait_backup(t: &TestNs, name: &str, phase: BackupPhase) -> RedisBackupStatus {
    let api = Api::<RedisBackup>::namespaced(t.admin.clone(), &t.name);
    wait_for(
        &format!("RedisBackup {name} {phase:?}"),
        BACKUP_TIMEOUT,
        || async {
            let status = api.get(name).await.map_err(|e| e.to_string())?.status;
            match status {
                Some(s) if s.phase == Some(phase) => Ok(s),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

async fn wait_restore(t: &TestNs, name: &str, phase: RestorePhase) -> RestoreStatus {
    wait_for(
        &format!("{name}'s restore {phase:?}"),
        RESTORE_TIMEOUT,
        || async {
            let restore = t.status(name).await.and_then(|s| s.restore);
            match restore {
                Some(r) if r.phase == phase => Ok(r),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Writes `count` keys `k:<i>` = `v:<i>` through one pipelined redis-cli.
fn load(t: &TestNs, ip: &str, password: &str, count: usize) {
    let mut script = String::with_capacity(count * 24);
    for i in 0..count {
        script.push_str(&format!("SET k:{i} v:{i}\r\n"));
    }
    let mut child = redis_cli(t, ip, password, &["--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run redis-cli --pipe");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(script.as_bytes()).expect("pipe the keys");
    }
    let out = child.wait_with_output().expect("redis-cli --pipe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("errors: 0, replies: {count}")),
        "every key written: {text}"
    );
}

fn redis_cli(t: &TestNs, ip: &str, password: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=1", "60"])
        .arg(&t.env.redis_cli)
        .args(["-h", ip, "-p", "6379", "--no-auth-warning", "-a", password])
        .args(args);
    cmd
}

/// Writes to the master until killed: the load a backup runs under.
fn write_load(t: &TestNs, ip: &str, password: &str) -> Child {
    redis_cli(
        t,
        ip,
        password,
        &["-r", "-1", "-i", "0.002", "INCR", "load"],
    )
    .stdout(Stdio::null())
    .spawn()
    .expect("run the write load")
}

/// Asserts `k:0..count` all hold their values on the instance at `ip`, 1,000 keys per MGET.
fn assert_every_key(t: &TestNs, ip: &str, password: &str, count: usize) {
    for start in (0..count).step_by(1000) {
        let end = (start + 1000).min(count);
        let keys: Vec<String> = (start..end).map(|i| format!("k:{i}")).collect();
        let mut args = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let out = redis_cli(t, ip, password, &args).output().expect("MGET");
        let text = String::from_utf8_lossy(&out.stdout);
        let values: Vec<&str> = text.lines().collect();
        let expected: Vec<String> = (start..end).map(|i| format!("v:{i}")).collect();
        assert_eq!(values, expected, "keys k:{start}..k:{end} on {ip}");
    }
}

/// A test namespace with its own object store (credentials Secret `s3`) and operator, and a
/// Ready replication `src` of `spec` backing up there, holding keys `k:0..keys`.
async fn source_set(prefix: &str, mut spec: Value, keys: usize) -> (TestNs, ObjectStore, ReadySet) {
    let mut t = TestNs::new(prefix).await;
    let store = ObjectStore::start(&t).await;
    store.create_credentials_secret(&t, "s3").await;
    t.start_operator();
    spec["backup"] = backup_spec(&store);
    let set = t.create_ready("src", spec).await;
    load(&t, &set.master_ip, &set.password, keys);
    (t, store, set)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_under_write_load_restores_every_key_into_a_new_set() {
    let (t, store, set) = source_set("backup", json!({"instances": 3}), KEYS).await;
    // Both replicas hold every key before the backup, so the replica's snapshot must too.
    // (Not `WAIT 2` from a new connection: it has written nothing, so it waits for nothing. CI
    // once backed up a replica 75,000 keys into the load.)
    wait_for(
        "both replicas holding every key",
        BACKUP_TIMEOUT,
        || async {
            let mut counts = Vec::new();
            for pod in t.pod_names("src").await {
                if pod != set.master {
                    let ip = t.pod_ip(&pod).await;
                    counts.push(t.redis_cli(&ip, Some(&set.password), &["DBSIZE"]));
                }
            }
            if counts.len() == 2 && counts.iter().all(|c| *c == KEYS.to_string()) {
                Ok(())
            } else {
                Err(format!("keys on the replicas: {counts:?}"))
            }
        },
    )
    .await;
    let mut writer = write_load(&t, &set.master_ip, &set.password);

    create_backup(&t, "b1", json!({"replication": "src"})).await;
    let backup = wait_backup(&t, "b1", BackupPhase::Completed).await;
    let _ = writer.kill();
    let _ = writer.wait();
    let source = backup.source.clone().expect("the source instance");
    assert_ne!(
        source, set.master,
        "the snapshot came from a replica, not the master"
    );
    assert!(
        backup.bytes > 1_000_000,
        "a snapshot of 100,000 keys: {backup:?}"
    );
    let dir = backup.path.clone().expect("the backup's path");
    assert_eq!(dir, format!("vigil/{}/src/b1", t.name));
    let objects: BTreeSet<String> = store.list(&dir).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        objects,
        [format!("{dir}/dump.rdb"), format!("{dir}/manifest.json")].into(),
    );
    let manifest: Value =
        serde_json::from_slice(&store.get(&format!("{dir}/manifest.json"))).expect("json");
    assert_eq!(manifest["sha256"].as_str(), backup.sha256.as_deref());
    assert_eq!(manifest["bytes"].as_i64(), Some(backup.bytes));
    assert_eq!(manifest["offset"].as_i64(), backup.offset);

    t.create_replication(
        "restored",
        // With the AOF on, the first instance loads the RDB with it off, then turns it on.
        json!({"instances": 3, "persistence": "Aof", "bootstrap": {"backup": {"name": "b1"}}}),
    )
    .await;
    let restore = wait_restore(&t, "restored", RestorePhase::Completed).await;
    assert!(
        restore.keys.is_some_and(|k| k >= KEYS as i64),
        "the keys restored: {restore:?}"
    );
    let source = restore.source.expect("the source");
    assert_eq!(source.backup.as_deref(), Some("b1"));
    assert_eq!(source.offset, backup.offset);
    let status = t.wait_ready("restored", 3, RESTORE_TIMEOUT).await;
    let master = status.current_master.clone().expect("a master");
    let restored_ip = t.pod_ip(&master).await;
    let restored_password = t.password("restored").await;
    assert_eq!(master, "restored-0", "the first instance restored");
    assert_every_key(&t, &restored_ip, &restored_password, KEYS);
    // The others synced from it: every key on a replica too.
    let replica = t
        .status("restored")
        .await
        .and_then(|s| s.instances.into_iter().find(|i| i.name != master))
        .expect("a replica");
    let replica_ip = t.pod_ip(&replica.name).await;
    assert_every_key(&t, &replica_ip, &restored_password, KEYS);
    let reasons = t.event_reasons("restored").await;
    assert!(reasons.iter().any(|r| r == "Restored"), "{reasons:?}");
    wait_for(
        "the AOF on in the restored master",
        Duration::from_secs(30),
        || async {
            let on = t.redis_cli(
                &restored_ip,
                Some(&restored_password),
                &["CONFIG", "GET", "appendonly"],
            );
            if on.ends_with("yes") { Ok(()) } else { Err(on) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_missing_backup_starts_nothing() {
    let (t, store, set) = source_set("badrestore", json!({"instances": 1}), 1000).await;
    // As a user would: the plugin makes the backup and follows it.
    let out = crate::plugin::plugin(
        &t,
        &["backup", "src", "--backup-name", "b1", "--timeout=2m"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl vigil backup: {stdout}{stderr}"
    );
    assert!(stdout.starts_with("completed: "), "{stdout}");
    assert!(stderr.contains("redisbackup b1 created"), "{stderr}");
    let backup = wait_backup(&t, "b1", BackupPhase::Completed).await;
    assert_eq!(
        backup.source.as_deref(),
        Some(set.master.as_str()),
        "alone: the master"
    );
    let dir = backup.path.expect("path");

    // Missing: no pod at all, and the status says why.
    t.create_replication(
        "missing",
        json!({"instances": 1, "bootstrap": {"backup": {"name": "nope"}}}),
    )
    .await;
    let failed = wait_restore(&t, "missing", RestorePhase::Failed).await;
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("RedisBackup nope does not exist"), "{error}");
    assert!(t.pod_names("missing").await.is_empty(), "nothing starts");

    // Corrupt: the first instance refuses it and never serves; no other instance starts.
    store.corrupt(&format!("{dir}/dump.rdb"));
    t.create_replication(
        "corrupt",
        json!({"instances": 2, "bootstrap": {"backup": {"name": "b1"}}}),
    )
    .await;
    let failed = wait_restore(&t, "corrupt", RestorePhase::Failed).await;
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("is corrupt"), "{error}");
    let status = t.status("corrupt").await.expect("status");
    let restored = status.conditions.iter().find(|c| c.type_ == "Restored");
    assert_eq!(
        restored.map(|c| c.status.as_str()),
        Some("False"),
        "{restored:?}"
    );
    assert_eq!(restored.map(|c| c.reason.as_str()), Some("RestoreFailed"));
    assert_eq!(
        t.pod_names("corrupt").await,
        ["corrupt-0".to_string()].into()
    );
    assert!(status.current_master.is_none(), "no master: {status:?}");
    let reasons = t.event_reasons("corrupt").await;
    assert!(reasons.iter().any(|r| r == "RestoreFailed"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_keeps_exactly_the_retained_backups() {
    let (t, store, _set) = source_set("schedule", json!({"instances": 2}), 1000).await;
    let schedule: RedisScheduledBackup = serde_json::from_value(json!({
        "apiVersion": "redis.vigil.dev/v1alpha1", "kind": "RedisScheduledBackup",
        "metadata": {"name": "every5s"},
        "spec": {"schedule": "*/5 * * * * *", "replication": "src", "immediate": true,
            "retention": {"count": 2}},
    }))
    .expect("a schedule");
    let schedules = Api::<RedisScheduledBackup>::namespaced(t.admin.clone(), &t.name);
    schedules
        .create(&PostParams::default(), &schedule)
        .await
        .expect("create the schedule");
    let backups = Api::<RedisBackup>::namespaced(t.admin.clone(), &t.name);
    let labelled = ListParams::default().labels("redis.vigil.dev/scheduled-backup=every5s");
    // Four backups made, two kept: in the cluster and in the bucket.
    let made = std::sync::Mutex::new(BTreeSet::new());
    wait_for(
        "four backups made and two kept",
        Duration::from_secs(90),
        || async {
            let list = backups.list(&labelled).await.map_err(|e| e.to_string())?;
            let mut seen = made.lock().unwrap_or_else(|p| p.into_inner());
            seen.extend(list.items.iter().filter_map(|b| b.metadata.name.clone()));
            let completed: Vec<_> = list
                .items
                .iter()
                .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
                .collect();
            let manifests = store
                .list(&format!("vigil/{}/src/", t.name))
                .into_iter()
                .filter(|(k, _)| k.ends_with("/manifest.json"))
                .count();
            if seen.len() >= 4 && completed.len() == 2 && list.items.len() == 2 && manifests == 2 {
                Ok(())
            } else {
                Err(format!(
                    "made {seen:?}, {} listed, {} completed, {manifests} manifests",
                    list.items.len(),
                    completed.len()
                ))
            }
        },
    )
    .await;

    let reasons = t.event_reasons("every5s").await;
    assert!(reasons.iter().any(|r| r == "BackupExpired"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_during_a_failover_completes_from_the_new_master() {
    let spec = json!({"instances": 3, "failover": {"downAfterMilliseconds": 1000}});
    let (t, store, set) = source_set("backupfo", spec, 10_000).await;
    let epoch = t.status("src").await.map_or(0, |s| s.epoch);

    t.chaos(&set.master, Chaos::Freeze);
    create_backup(&t, "b1", json!({"replication": "src", "target": "Master"})).await;
    let promoted = t
        .wait_new_master("src", &set.master, epoch, Duration::from_secs(60))
        .await;
    t.chaos(&set.master, Chaos::Resume);
    let backup = wait_backup(&t, "b1", BackupPhase::Completed).await;
    let new_master = promoted.current_master.expect("a new master");
    assert_eq!(
        backup.source.as_deref(),
        Some(new_master.as_str()),
        "taken from the new topology: {backup:?}"
    );
    if backup.attempts > 1 {
        let reasons = t.event_reasons("b1").await;
        assert!(reasons.iter().any(|r| r == "BackupRetrying"), "{reasons:?}");
    }
    let dir = backup.path.expect("path");
    let manifest: Value =
        serde_json::from_slice(&store.get(&format!("{dir}/manifest.json"))).expect("json");
    assert_eq!(manifest["source"].as_str(), Some(new_master.as_str()));
    assert_eq!(manifest["sha256"].as_str(), backup.sha256.as_deref());
}
