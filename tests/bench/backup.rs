//! Backup and restore throughput against a real S3 server (versitygw), beside the AWS CLI
//! copying the same bytes to and from the same store in the same run.
//!
//! The backup figure is the whole RedisBackup, from its creation to `Completed` (the
//! operator's snapshot over the replication protocol, streamed into a multipart upload); the
//! restore figure is from `status.restore` Running to Completed (pod start, download with its
//! checksum, the server's load, the promotion). Both include their fixed costs, as the CLI's
//! include its start-up.
//!
//! The values are random, so LZF cannot shrink them: the snapshot is as big as asked, and with
//! Redis's default `rdbcompression yes` the source spends most of a backup failing to compress
//! them (`redis-cli --rdb` of the same instance takes as long). So each run is measured twice:
//! with the default, and with `rdbcompression no` (what such data calls for), where the bytes
//! moved are the same and the source no longer bounds the figure.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use vigil::api::{BackupPhase, RedisBackup, RedisReplication, RestorePhase};

use crate::support::TestNs;
use crate::support::s3::ObjectStore;

const TIMEOUT: Duration = Duration::from_secs(600);

/// Seconds per run of each way of moving the snapshot.
#[derive(Debug, Default)]
pub struct Throughput {
    /// The source's `rdbcompression`.
    pub compression: bool,
    pub bytes: u64,
    /// `redis-cli --rdb` from the backup's source instance to a local file: the stock way to
    /// take the snapshot, before copying it.
    pub dump_cli: Vec<f64>,
    pub backup: Vec<f64>,
    pub upload_cli: Vec<f64>,
    pub restore: Vec<f64>,
    pub download_cli: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

impl Throughput {
    fn mb_s(&self, seconds: &[f64]) -> f64 {
        self.bytes as f64 / 1e6 / median(seconds)
    }

    /// The report's table for this setting.
    pub fn markdown(&self) -> String {
        let backup = self.mb_s(&self.backup);
        let upload = self.mb_s(&self.upload_cli);
        let stock: Vec<f64> = self
            .dump_cli
            .iter()
            .zip(&self.upload_cli)
            .map(|(dump, up)| dump + up)
            .collect();
        let stock = self.mb_s(&stock);
        let restore = self.mb_s(&self.restore);
        let download = self.mb_s(&self.download_cli);
        format!(
            "\n### `rdbcompression {}`: one RDB snapshot of {:.1} MB, {} runs, medians\n\n\
             | | vigil | stock | ratio |\n\
             |---|---|---|---|\n\
             | backup (RedisBackup created → Completed) vs `aws s3 cp` of the file (target ≥ 0.8) | {backup:.1} MB/s | {upload:.1} MB/s | {:.2} |\n\
             | backup vs `redis-cli --rdb` then `aws s3 cp` | {backup:.1} MB/s | {stock:.1} MB/s | {:.2} |\n\
             | restore (restore Running → Completed) vs `aws s3 cp` download | {restore:.1} MB/s | {download:.1} MB/s | {:.2} |\n",
            if self.compression { "yes" } else { "no" },
            self.bytes as f64 / 1e6,
            self.backup.len(),
            backup / upload,
            backup / stock,
            restore / download,
        )
    }
}

/// The section over every setting measured.
pub fn section(figures: &[Throughput]) -> String {
    let tables: String = figures.iter().map(Throughput::markdown).collect();
    format!(
        "\n## Backup and restore throughput\n\n\
         Random 1,000-byte values (LZF cannot shrink them); versitygw v1.8.0 on the node's \
         address; the stock client is the AWS CLI (`aws s3 cp`, its start-up included), and \
         `redis-cli --rdb` from the same instance for the stock way of taking the snapshot. With \
         `rdbcompression yes` (Redis's default) the source's RDB encoding bounds any backup: \
         `redis-cli --rdb` takes about as long as the whole of vigil's.\n{tables}"
    )
}

/// Fills a set with about `mb` MB, then backs it up and restores it `runs` times, and copies
/// the snapshot with the AWS CLI as often.
pub async fn measure(mb: usize, runs: usize, compression: bool) -> Throughput {
    let mut t = TestNs::new("bench-backup").await;
    let store = ObjectStore::start(&t).await;
    store.create_credentials_secret(&t, "s3").await;
    t.start_operator();
    let rdbcompression = if compression { "yes" } else { "no" };
    let spec = json!({"instances": 2, "config": {"rdbcompression": rdbcompression},
        "backup": {"objectStore": {
            "endpoint": store.endpoint(), "bucket": store.bucket(), "credentials": {"name": "s3"}}}});
    let set = t.create_ready("src", spec).await;
    fill(&t, &set.master_ip, &set.password, mb);

    let backups = Api::<RedisBackup>::namespaced(t.admin.clone(), &t.name);
    let mut out = Throughput {
        compression,
        ..Throughput::default()
    };
    let local = PathBuf::from(&t.env.artifacts).join(format!("{}-dump.rdb", t.name));
    for run in 1..=runs {
        let name = format!("b{run}");
        let backup: RedisBackup = serde_json::from_value(json!({
            "apiVersion": "redis.vigil.dev/v1alpha1", "kind": "RedisBackup",
            "metadata": {"name": name}, "spec": {"replication": "src"}}))
        .expect("a RedisBackup");
        let started = Instant::now();
        backups
            .create(&PostParams::default(), &backup)
            .await
            .expect("create the backup");
        let done = |b: Option<&RedisBackup>| {
            let phase = b.and_then(|b| b.status.as_ref()).and_then(|s| s.phase);
            matches!(phase, Some(BackupPhase::Completed | BackupPhase::Failed))
        };
        let backup = watch_until(&backups, &name, done).await;
        let status = backup.status.expect("a finished backup has a status");
        assert_eq!(status.phase, Some(BackupPhase::Completed), "{status:?}");
        out.backup.push(started.elapsed().as_secs_f64());
        out.bytes = u64::try_from(status.bytes).unwrap_or(0);
        let source = status.source.clone().expect("the backup's source instance");
        let source_ip = t.pod_ip(&source).await;
        out.dump_cli
            .push(dump(&t, &source_ip, &set.password, &local).as_secs_f64());
        let key = format!("{}/dump.rdb", status.path.expect("the backup's path"));

        let started = Instant::now();
        let got = store.aws_bounded(
            TIMEOUT,
            &[
                "s3",
                "cp",
                "--only-show-errors",
                &format!("s3://{}/{key}", store.bucket()),
                local.to_str().expect("utf-8"),
            ],
        );
        assert!(
            got.status.success(),
            "aws s3 cp download: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        out.download_cli.push(started.elapsed().as_secs_f64());
        out.upload_cli.push(
            store
                .aws_cp_upload(&local, &format!("cli/{name}.rdb"))
                .as_secs_f64(),
        );

        let restored = format!("r{run}");
        t.create_replication(
            &restored,
            json!({"instances": 1, "bootstrap": {"backup": {"name": name}}}),
        )
        .await;
        let replications = t.replications();
        let phase = |r: Option<&RedisReplication>| {
            r.and_then(|r| r.status.as_ref())
                .and_then(|s| s.restore.as_ref())
                .map(|r| r.phase)
        };
        watch_until(&replications, &restored, |r| phase(r).is_some()).await;
        let running = Instant::now();
        let finished = watch_until(&replications, &restored, |r| {
            matches!(
                phase(r),
                Some(RestorePhase::Completed | RestorePhase::Failed)
            )
        })
        .await;
        let took = running.elapsed().as_secs_f64();
        assert_eq!(
            phase(Some(&finished)),
            Some(RestorePhase::Completed),
            "{:?}",
            finished.status
        );
        out.restore.push(took);
        eprintln!(
            "bench backup {run} (rdbcompression {rdbcompression}): {:.1} MB: backup {:.2} s, redis-cli --rdb {:.2} s, aws upload {:.2} s, restore {:.2} s, aws download {:.2} s",
            out.bytes as f64 / 1e6,
            out.backup[run - 1],
            out.dump_cli[run - 1],
            out.upload_cli[run - 1],
            took,
            out.download_cli[run - 1]
        );
        t.replications()
            .delete(&restored, &Default::default())
            .await
            .expect("delete the restored set");
    }
    let _ = std::fs::remove_file(&local);
    out
}

/// `redis-cli --rdb` of the instance at `ip` into `local`: how long it took.
fn dump(t: &TestNs, ip: &str, password: &str, local: &std::path::Path) -> Duration {
    let started = Instant::now();
    let mut timeout = Command::new("timeout");
    let out = redis_cli(&mut timeout, t, ip, password)
        .arg("--rdb")
        .arg(local)
        .output()
        .expect("run redis-cli --rdb");
    assert!(
        out.status.success(),
        "redis-cli --rdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

/// `command` (`timeout`) running redis-cli against the instance at `ip`, bounded by `TIMEOUT`.
fn redis_cli<'a>(
    command: &'a mut Command,
    t: &TestNs,
    ip: &str,
    password: &str,
) -> &'a mut Command {
    command
        .args(["--kill-after=1", &TIMEOUT.as_secs().to_string()])
        .arg(&t.env.redis_cli)
        .args(["-h", ip, "-p", "6379", "--no-auth-warning", "-a", password])
}

/// Watches `name` until `done` holds (a watch, not a poll: the time is the change's, not the
/// next poll's).
async fn watch_until<K>(api: &Api<K>, name: &str, done: impl Fn(Option<&K>) -> bool) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let cond = kube::runtime::wait::await_condition(api.clone(), name, |o: Option<&K>| done(o));
    match tokio::time::timeout(TIMEOUT, cond).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name} was deleted"),
        Ok(Err(e)) => panic!("watching {name}: {e}"),
        Err(_) => panic!("{name} did not finish within {TIMEOUT:?}"),
    }
}

/// About `mb` MB of random 1,000-byte values through one pipelined redis-cli: random, so the
/// RDB's LZF compression keeps the snapshot near `mb` MB.
fn fill(t: &TestNs, ip: &str, password: &str, mb: usize) {
    use rand::distr::{Alphanumeric, SampleString};
    let keys = mb * 1000;
    let mut script = String::with_capacity(keys * 1024);
    let mut rng = rand::rng();
    for i in 0..keys {
        let value = Alphanumeric.sample_string(&mut rng, 1000);
        script.push_str(&format!("SET k:{i} {value}\r\n"));
    }
    let mut timeout = Command::new("timeout");
    let mut child = redis_cli(&mut timeout, t, ip, password)
        .arg("--pipe")
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
        text.contains(&format!("errors: 0, replies: {keys}")),
        "filled: {text}"
    );
}
