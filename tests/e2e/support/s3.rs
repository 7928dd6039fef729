//! Real object storage for the backup tests (issue 16): one versitygw per test (an S3-compatible
//! server users run; tools.sh builds it), with its posix backend on a directory of the test's
//! artifacts, listening on the node's IP so that pods reach it like any S3 endpoint outside the
//! cluster. The AWS CLI (also from tools.sh) is the stock client the tests read it with.
//!
//! ```ignore
//! let store = ObjectStore::start(&t).await;
//! store.create_credentials_secret(&t, "s3-creds").await;
//! // ... a RedisBackup to store.endpoint(), store.bucket() ...
//! let objects = store.list("cache/");
//! ```

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::clients::clients_dir;
use super::{TestNs, wait_for};

/// How long versitygw may take to answer after it starts.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one AWS CLI command other than an upload may take.
pub const AWS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `aws_cp_upload` may take (the benchmark's files are a few hundred MB at most).
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// The region versitygw serves (its default); S3 clients sign requests for it.
pub const REGION: &str = "us-east-1";

/// A running versitygw with one bucket; killed when dropped.
pub struct ObjectStore {
    child: Child,
    ip: String,
    port: u16,
    bucket: String,
    access_key: String,
    secret_key: String,
    /// The posix backend's root: each bucket a directory, each object a file under it.
    root: PathBuf,
    /// The AWS CLI's config (path-style addressing) and its scratch files.
    aws_dir: PathBuf,
    log: PathBuf,
}

/// The node's IP in the e2e network namespace (tests/e2e.sh exports it): processes there bind
/// it, and pods reach it through the bridge's gateway.
pub fn node_ip() -> String {
    std::env::var("VIGIL_E2E_NODE_IP").unwrap_or_else(|_| {
        panic!(
            "VIGIL_E2E_NODE_IP is not set: the object store runs on the local real node only; \
             start the tests with tests/e2e.sh"
        )
    })
}

fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

impl ObjectStore {
    /// Starts versitygw for test `t` (log `<namespace>-versitygw.log`, data `<namespace>-s3/` in
    /// the artifacts) and creates its bucket.
    pub async fn start(t: &TestNs) -> Self {
        Self::start_in(&t.env.artifacts, &t.name).await
    }

    /// Starts versitygw with its log and data in `artifacts`, named after `name`.
    pub async fn start_in(artifacts: &Path, name: &str) -> Self {
        let ip = node_ip();
        let base = artifacts.join(format!("{name}-s3"));
        let root = base.join("data");
        let aws_dir = base.join("aws");
        for dir in [&root, &aws_dir] {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        // Path-style requests (http://IP:PORT/bucket/key): an IP has no virtual-host names.
        std::fs::write(
            aws_dir.join("config"),
            format!("[default]\nregion = {REGION}\ns3 =\n  addressing_style = path\n"),
        )
        .expect("write the AWS CLI config");
        // Free now on the node IP; versitygw binds it a moment later (a race no parallel test
        // loses in practice: the kernel does not hand the same ephemeral port out again at once).
        let port = std::net::TcpListener::bind((ip.as_str(), 0))
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("a free port on {ip}: {e}"))
            .port();
        let log = artifacts.join(format!("{name}-versitygw.log"));
        let log_file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let log_err = log_file.try_clone().expect("clone the log handle");
        let access_key = random_token(20);
        let secret_key = random_token(40);
        let child = Command::new(clients_dir().join("versitygw"))
            // Root credentials through the environment, not argv (visible in ps).
            .env("ROOT_ACCESS_KEY_ID", &access_key)
            .env("ROOT_SECRET_ACCESS_KEY", &secret_key)
            .args(["--port", &format!("{ip}:{port}"), "--region", REGION])
            .args(["--access-log", "stdout"])
            .arg("posix")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting versitygw (tools.sh installs it): {e}"));
        let mut store = Self {
            child,
            ip,
            port,
            bucket: "vigil-backups".into(),
            access_key,
            secret_key,
            root,
            aws_dir,
            log,
        };
        store.wait_answering().await;
        let out = store.aws(&["s3api", "create-bucket", "--bucket", &store.bucket]);
        assert!(
            out.status.success(),
            "create bucket {}: {}",
            store.bucket,
            String::from_utf8_lossy(&out.stderr)
        );
        store
    }

    /// Waits until versitygw answers HTTP on its port (any status: unsigned requests are
    /// refused), failing at once with its log if it exits.
    async fn wait_answering(&mut self) {
        let addr: SocketAddr = format!("{}:{}", self.ip, self.port)
            .parse()
            .expect("socket address");
        let what = format!("versitygw to answer on {addr}");
        let log = self.log.clone();
        let child = &mut self.child;
        wait_for(&what, START_TIMEOUT, || {
            let exited = child.try_wait().ok().flatten();
            let log = log.clone();
            async move {
                if let Some(status) = exited {
                    panic!(
                        "versitygw exited ({status}) while starting; its log {}:\n{}",
                        log.display(),
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                http_status_line(addr).map_err(|e| e.to_string())
            }
        })
        .await;
    }

    /// `http://IP:PORT`, as clients and the operator's pods reach it.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    // For the backups' spec (the store's own default region; nothing checks it yet).
    #[allow(dead_code)]
    pub fn region(&self) -> &str {
        REGION
    }

    /// Its log (the access log: one line per request).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A Secret `name` in the test's namespace with keys `ACCESS_KEY_ID` and
    /// `ACCESS_SECRET_KEY`, for a backup's credentials.
    pub async fn create_credentials_secret(&self, t: &TestNs, name: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {
                "ACCESS_KEY_ID": self.access_key,
                "ACCESS_SECRET_KEY": self.secret_key,
            },
        }))
        .expect("secret");
        Api::<Secret>::namespaced(t.admin.clone(), &t.name)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("create Secret {name} in {}: {e}", t.name));
    }

    /// The objects under `prefix` as the store lists them (ListObjectsV2: a partial or
    /// unfinished multipart upload is not there), `(key, size)` sorted by key.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let out = self.aws(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            &self.bucket,
            "--prefix",
            prefix,
            "--output",
            "json",
        ]);
        assert!(
            out.status.success(),
            "list {prefix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // No objects: empty output, or a document without Contents.
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Vec::new();
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "list {prefix}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let mut objects: Vec<(String, u64)> = doc["Contents"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|o| {
                let key = o["Key"].as_str().expect("Key").to_string();
                (key, o["Size"].as_u64().expect("Size"))
            })
            .collect();
        objects.sort();
        objects
    }

    /// An object's bytes, downloaded with the AWS CLI (which may refuse an object whose stored
    /// checksum no longer matches: `try_get` returns that refusal).
    pub fn get(&self, key: &str) -> Vec<u8> {
        self.try_get(key)
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
    }

    /// `get`, with the CLI's error as the error.
    pub fn try_get(&self, key: &str) -> Result<Vec<u8>, String> {
        let file = self.aws_dir.join(format!("get-{}", random_token(8)));
        let dest = file.to_str().expect("utf-8 path");
        let out = self.aws(&["s3", "cp", "--only-show-errors", &self.url(key), dest]);
        let result = if out.status.success() {
            std::fs::read(&file).map_err(|e| format!("reading {dest}: {e}"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        };
        let _ = std::fs::remove_file(&file);
        result
    }

    /// Where the posix backend keeps an object: the file `<root>/<bucket>/<key>`.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(&self.bucket).join(key)
    }

    /// An object's bytes as stored on disk, past any check the server or a client makes.
    pub fn stored(&self, key: &str) -> Vec<u8> {
        let path = self.object_path(key);
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// Flips 16 bytes (or all, if fewer) in the middle of the stored object, in place: same
    /// size, same metadata (ETag, checksums), different content, so any check of the content
    /// against them must fail.
    pub fn corrupt(&self, key: &str) {
        let path = self.object_path(key);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let size = file.metadata().expect("object file metadata").len();
        assert!(size > 0, "{key} is empty: nothing to corrupt");
        let n = size.min(16);
        let start = (size - n) / 2;
        let mut bytes = vec![0u8; usize::try_from(n).expect("16 bytes")];
        file.seek(SeekFrom::Start(start)).expect("seek");
        file.read_exact(&mut bytes).expect("read the bytes to flip");
        for b in &mut bytes {
            *b ^= 0xff;
        }
        file.seek(SeekFrom::Start(start)).expect("seek");
        file.write_all(&bytes).expect("write the flipped bytes");
        file.sync_all().expect("sync the corrupted object");
    }

    /// Uploads `local` to `key` with `aws s3 cp` (the stock client's defaults: multipart above
    /// 8 MB, 10 parts at a time) and returns how long the command took, the CLI's start-up
    /// (about half a second) included.
    pub fn aws_cp_upload(&self, local: &Path, key: &str) -> Duration {
        let started = Instant::now();
        let out = self.aws_bounded(
            UPLOAD_TIMEOUT,
            &[
                "s3",
                "cp",
                "--only-show-errors",
                local.to_str().expect("utf-8 path"),
                &self.url(key),
            ],
        );
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "aws s3 cp {} {key}: {}",
            local.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Runs the AWS CLI against this store (`AWS_TIMEOUT`).
    pub fn aws(&self, args: &[&str]) -> Output {
        self.aws_bounded(AWS_TIMEOUT, args)
    }

    /// Runs the AWS CLI with this store's endpoint and credentials, killed after `timeout`
    /// (exit status 124 then, and stderr says so).
    pub fn aws_bounded(&self, timeout: Duration, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", &timeout.as_secs().to_string()])
            .arg(clients_dir().join("aws"))
            .args(["--endpoint-url", &self.endpoint()])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_CONFIG_FILE", self.aws_dir.join("config"))
            // Nothing from the machine's own AWS setup, no instance metadata lookups.
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.aws_dir.join("credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .stdin(Stdio::null());
        // The store is on the node IP: no proxy in between.
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            cmd.env_remove(var);
        }
        let mut out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running aws (tools.sh installs it): {e}"));
        if matches!(out.status.code(), Some(124 | 137)) {
            out.stderr.extend_from_slice(
                format!("\naws {args:?}: no exit within {timeout:?}").as_bytes(),
            );
        }
        out
    }
}

/// The status line of `GET /` at `addr`, each step bounded by a second.
pub fn http_status_line(addr: SocketAddr) -> std::io::Result<String> {
    let step = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, step)?;
    stream.set_read_timeout(Some(step))?;
    stream.set_write_timeout(Some(step))?;
    stream.write_all(
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.starts_with("HTTP/1.") {
        Ok(line)
    } else {
        Err(std::io::Error::other(format!(
            "not an HTTP answer: {text:?}"
        )))
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The data of a failed test stays for a look (tests/e2e.sh wipes the artifacts at the
        // next run); a passing test's is removed, as benchmark files are large.
        if !std::thread::panicking()
            && let Some(base) = self.root.parent()
        {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}
