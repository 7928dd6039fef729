//! TLS (`spec.tls`): clients and replication over TLS with a certificate from a
//! kubernetes.io/tls Secret, plain TCP refused, a master crash failing over with TLS on, and the
//! apiserver refusing to turn TLS off on a running set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::{Chaos, TestNs, wait_for};

const TIMEOUT: Duration = Duration::from_secs(120);
const SECRET: &str = "cache-tls";

/// A CA and a certificate for every instance of `cache` in the test namespace, made with
/// openssl as an administrator (or cert-manager) would, and the Secret holding them.
pub(crate) struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    async fn create(t: &TestNs) -> Self {
        Self::issue(t, "cache", SECRET, None).await
    }

    /// A certificate for the instances of `set` in `t`'s namespace in the Secret `secret`,
    /// signed by `ca`'s CA (one issuer for several namespaces, as a cert-manager ClusterIssuer
    /// is), or by a new CA.
    pub(crate) async fn issue(
        t: &TestNs,
        set: &str,
        secret: &str,
        ca: Option<&Certificates>,
    ) -> Self {
        let dir = t.env.artifacts.join(format!("{}-{set}-tls", t.name));
        std::fs::create_dir_all(&dir).expect("certificate directory");
        let ns = &t.name;
        std::fs::write(
            dir.join("ext.cnf"),
            format!(
                "subjectAltName=DNS:*.{set}-headless.{ns}.svc,\
                 DNS:*.{set}-headless.{ns}.svc.cluster.local,DNS:localhost,IP:127.0.0.1\n\
                 extendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .expect("write ext.cnf");
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        match ca {
            Some(ca) => {
                for file in ["ca.crt", "ca.key"] {
                    std::fs::copy(ca.dir.join(file), dir.join(file)).expect("copy the CA");
                }
            }
            None => openssl(
                &dir,
                &format!(
                    "req -x509 {key} -subj /CN=vigil-e2e-ca -days 1 -keyout ca.key -out ca.crt"
                ),
            ),
        }
        openssl(
            &dir,
            &format!("req {key} -subj /CN={set} -keyout tls.key -out tls.csr"),
        );
        openssl(
            &dir,
            "x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -set_serial 1 -days 1 \
             -extfile ext.cnf -out tls.crt",
        );
        let certs = Self { dir };
        let data = ["tls.crt", "tls.key", "ca.crt"]
            .into_iter()
            .map(|key| (key.to_string(), ByteString(certs.read(key))))
            .collect();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(secret.into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(t.admin.clone(), &t.name)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the TLS Secret");
        certs
    }

    fn read(&self, file: &str) -> Vec<u8> {
        let path = self.dir.join(file);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// redis-cli over TLS, verifying the instance's certificate against `ca`; stdout, else stderr.
pub(crate) fn tls_cli(t: &TestNs, ca: &Path, password: &str, ip: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args([
            "--kill-after=1",
            "10",
            &t.env.redis_cli.display().to_string(),
        ])
        .args(["-h", ip, "-p", "6379", "--no-auth-warning", "-a", password])
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .expect("run redis-cli");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stdout.is_empty() { stderr } else { stdout }
}

/// Runs `openssl <args>` (split on spaces) in `dir`.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A replication of 3 with TLS, Ready, and how to talk to it.
struct TlsSet {
    t: TestNs,
    certs: Certificates,
    password: String,
}

impl TlsSet {
    async fn ready(prefix: &str) -> Self {
        let mut t = TestNs::new(prefix).await;
        let certs = Certificates::create(&t).await;
        t.start_operator();
        t.create_replication(
            "cache",
            json!({"instances": 3, "tls": {"secretName": SECRET},
                "failover": {"downAfterMilliseconds": 1000}}),
        )
        .await;
        t.wait_ready("cache", 3, TIMEOUT).await;
        let password = t.password("cache").await;
        Self { t, certs, password }
    }

    fn cli(&self, ip: &str, args: &[&str]) -> String {
        tls_cli(&self.t, &self.certs.ca(), &self.password, ip, args)
    }

    fn info_field(&self, ip: &str, field: &str) -> Option<String> {
        let info = self.cli(ip, &["INFO", "replication"]);
        info.lines().find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{field}:"))
                .map(str::to_string)
        })
    }

    /// Waits until, over TLS, both other instances are linked to `master` (which counts them)
    /// and read `key` as `v`.
    async fn wait_linked(&self, master: &str, key: &str) {
        let master_ip = self.t.pod_ip(master).await;
        let others: Vec<String> = self
            .t
            .pod_names("cache")
            .await
            .into_iter()
            .filter(|p| p != master)
            .collect();
        assert_eq!(others.len(), 2, "{others:?}");
        wait_for(
            &format!("both replicas linked to {master} over TLS"),
            TIMEOUT,
            || async {
                let mut wrong = Vec::new();
                let slaves = self.info_field(&master_ip, "connected_slaves");
                if slaves.as_deref() != Some("2") {
                    wrong.push(format!("{master}: connected_slaves {slaves:?}"));
                }
                for pod in &others {
                    let ip = self.t.pod_ip(pod).await;
                    let link = self.info_field(&ip, "master_link_status");
                    let host = self.info_field(&ip, "master_host");
                    let value = self.cli(&ip, &["GET", key]);
                    if link.as_deref() != Some("up")
                        || host.as_deref() != Some(master_ip.as_str())
                        || value != "v"
                    {
                        wrong.push(format!("{pod}: link {link:?} to {host:?}, {key}={value}"));
                    }
                }
                if wrong.is_empty() {
                    Ok(())
                } else {
                    Err(wrong.join("; "))
                }
            },
        )
        .await;
    }
}

/// Clients and replication run over TLS only; turning TLS off is refused by the apiserver.
#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_clients_and_replication_and_refuses_plain_tcp() {
    let set = TlsSet::ready("tls").await;
    let t = &set.t;
    let master = t
        .status("cache")
        .await
        .and_then(|s| s.current_master)
        .expect("a master is recorded");
    let master_ip = t.pod_ip(&master).await;

    assert_eq!(set.cli(&master_ip, &["PING"]), "PONG");
    assert_eq!(set.cli(&master_ip, &["SET", "k", "v"]), "OK");
    let plain = t.redis_cli(&master_ip, Some(&set.password), &["PING"]);
    assert_ne!(plain, "PONG", "plain TCP must not be served");
    assert_eq!(
        set.cli(&master_ip, &["CONFIG", "GET", "tls-replication"])
            .lines()
            .collect::<Vec<_>>(),
        ["tls-replication", "yes"]
    );
    assert_eq!(
        set.cli(&master_ip, &["CONFIG", "GET", "port"])
            .lines()
            .collect::<Vec<_>>(),
        ["port", "0"]
    );
    set.wait_linked(&master, "k").await;

    let refused = t
        .replications()
        .patch(
            "cache",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tls": null}})),
        )
        .await
        .expect_err("turning TLS off must be refused");
    let message = refused.to_string();
    assert!(
        message.contains("spec.tls") && message.contains("cannot be added to or removed"),
        "{message}"
    );
    let spec = t
        .replications()
        .get("cache")
        .await
        .expect("replication")
        .spec;
    assert_eq!(spec.tls.map(|tls| tls.secret_name).as_deref(), Some(SECRET));

    // A backup reads its snapshot over TLS too, verifying the replica's certificate.
    let store = crate::support::s3::ObjectStore::start(t).await;
    store.create_credentials_secret(t, "s3").await;
    let backup = json!({"objectStore": {"endpoint": store.endpoint(), "bucket": store.bucket(),
        "credentials": {"name": "s3"}}});
    t.patch_spec("cache", json!({"backup": backup})).await;
    let out = crate::plugin::plugin(
        t,
        &["backup", "cache", "--backup-name", "b1", "--timeout=2m"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("completed: "),
        "kubectl vigil backup over TLS: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains(&format!(" from {master} ")),
        "from a replica: {stdout}"
    );
}

/// With TLS on, a crashed master is replaced and every instance, the old master too once it is
/// back, follows the new one over TLS.
#[tokio::test(flavor = "multi_thread")]
async fn tls_master_crash_fails_over_and_replicas_relink() {
    let set = TlsSet::ready("tls-crash").await;
    let t = &set.t;
    let status = t.status("cache").await.expect("status");
    let old = status.current_master.clone().expect("master");
    let old_ip = t.pod_ip(&old).await;
    assert_eq!(set.cli(&old_ip, &["SET", "before", "v"]), "OK");
    set.wait_linked(&old, "before").await;

    t.chaos(&old, Chaos::Crash);
    let status = t
        .wait_new_master("cache", &old, status.epoch, Duration::from_secs(60))
        .await;
    let new = status.current_master.expect("new master");
    set.wait_linked(&new, "before").await;
    let new_ip = t.pod_ip(&new).await;
    assert_eq!(set.cli(&new_ip, &["SET", "after", "v"]), "OK");
    set.wait_linked(&new, "after").await;
}
