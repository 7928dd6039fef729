//! The operator as users run it: installed by `helm install charts/vigil` from the image built
//! from `images/operator`, two replicas electing a leader, its Sentinel Service and metrics reached
//! through kube-proxy, failing over a crashed master and switching over on request, while a
//! client writes through the `<name>-master` ClusterIP Service.

use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use vigil::labels::SWITCHOVER_ANNOTATION;

use crate::support::{Chaos, Target, TestNs, target, wait_for};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/vigil");
/// Not `vigil`: the harness's per-test operators use that release's ServiceAccount and RBAC
/// (cluster-scoped names), which this release must not collide with.
const RELEASE: &str = "vigil-incluster";
const TIMEOUT: Duration = Duration::from_secs(120);

fn helm(t: &TestNs, args: &[&str]) -> Output {
    std::process::Command::new(&t.env.helm)
        .env("KUBECONFIG", &t.env.admin_kubeconfig)
        .args(args)
        .output()
        .expect("run helm")
}

/// Uninstalls the release (its ClusterRole and binding outlive the namespace otherwise).
struct Release<'a>(&'a TestNs);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = helm(self.0, &["uninstall", RELEASE, "--namespace", &self.0.name]);
    }
}

async fn cluster_ip(t: &TestNs, service: &str) -> String {
    Api::<Service>::namespaced(t.admin.clone(), &t.name)
        .get(service)
        .await
        .unwrap_or_else(|e| panic!("Service {service}: {e}"))
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP")
}

/// One plain HTTP/1.0 GET through `ip:port`, or the error.
fn http_get(ip: &str, port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::new(ip.parse().map_err(|e| format!("{ip}: {e}"))?, port);
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_installed_operator_fails_over_and_switches_over() {
    let t = TestNs::new("incluster").await;
    let started = Instant::now();
    let installed = helm(
        &t,
        &[
            "install",
            RELEASE,
            CHART,
            "--namespace",
            &t.name,
            "--set",
            "crds.install=false",
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.leaseDurationSeconds=6",
            "--set",
            "metrics.service.enabled=true",
            "--set",
            &format!("watchNamespace={}", t.name),
        ],
    );
    let _release = Release(&t);
    assert!(
        installed.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr)
    );
    let deployments: Api<Deployment> = Api::namespaced(t.admin.clone(), &t.name);
    wait_for("the operator Deployment Available", TIMEOUT, || async {
        let d = deployments.get(RELEASE).await.map_err(|e| e.to_string())?;
        let ready = d.status.as_ref().and_then(|s| s.ready_replicas);
        if ready == Some(2) {
            Ok(())
        } else {
            Err(format!("ready replicas {ready:?}"))
        }
    })
    .await;
    eprintln!(
        "in-cluster operator: 2 replicas Ready {:.1}s after helm install",
        started.elapsed().as_secs_f64()
    );
    let pods: Vec<String> = t
        .pods()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .expect("operator pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let leases: Api<Lease> = Api::namespaced(t.admin.clone(), &t.name);
    let holder = wait_for("a leader among the operator pods", TIMEOUT, || async {
        let lease = leases.get(RELEASE).await.map_err(|e| e.to_string())?;
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        // (The identity is the pod name with a suffix per process.)
        if pods.iter().any(|p| holder.starts_with(p.as_str())) {
            Ok(holder)
        } else {
            Err(format!("holder {holder:?}, pods {pods:?}"))
        }
    })
    .await;
    eprintln!("in-cluster operator: leader {holder}");

    t.create_replication("cache", json!({"instances": 3})).await;
    let status = t.wait_ready("cache", 3, TIMEOUT).await;
    let master = status.current_master.clone().expect("master");
    let master_ip = t.pod_ip(&master).await;
    let password = t.password("cache").await;
    let keys = t.write_acknowledged(&master_ip, &password, "before", 50);

    // Discovery through the Sentinel Service's ClusterIP (kube-proxy), as a client would.
    let sentinel_ip = cluster_ip(&t, &format!("{RELEASE}-sentinel")).await;
    let master_name = format!("{}.cache", t.name);
    wait_for(
        "the Sentinel Service to name the master",
        TIMEOUT,
        || async {
            let out = std::process::Command::new(&t.env.redis_cli)
                .args(["-h", &sentinel_ip, "-p", "26379", "--raw"])
                .args(["SENTINEL", "get-master-addr-by-name", &master_name])
                .output()
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.split_whitespace().collect::<Vec<_>>() == [master_ip.as_str(), "6379"] {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;
    let metrics_ip = cluster_ip(&t, &format!("{RELEASE}-metrics")).await;
    wait_for("/metrics through the metrics Service", TIMEOUT, || async {
        let body = http_get(&metrics_ip, 8081, "/metrics")?;
        if body.contains("vigil_instance_up") {
            Ok(())
        } else {
            Err(body.chars().take(300).collect())
        }
    })
    .await;

    // A crash of the master, while new connections write through the master Service.
    let service_ip = cluster_ip(&t, "cache-master").await;
    let crashed = Instant::now();
    t.chaos(&master, Chaos::Crash);
    let writer = {
        let redis_cli = t.env.redis_cli.clone();
        let (ip, pw) = (service_ip.clone(), password.clone());
        std::thread::spawn(move || write_through_service(&redis_cli, &ip, &pw, crashed))
    };
    let status = t
        .wait_new_master("cache", &master, status.epoch, TIMEOUT)
        .await;
    let new = status.current_master.clone().expect("new master");
    eprintln!(
        "in-cluster operator: crash of {master} failed over to {new} in {:.1}s",
        crashed.elapsed().as_secs_f64()
    );
    let report = writer.join().expect("writer");
    eprintln!("in-cluster operator: through Service cache-master after the crash: {report}");
    t.wait_topology("cache", &new, &password, TIMEOUT).await;
    let new_ip = t.pod_ip(&new).await;
    t.assert_keys_present(&new_ip, &password, &keys);

    // A switchover on request, to the replica that is not the old master.
    let target_pod = t
        .pod_names("cache")
        .await
        .into_iter()
        .find(|p| *p != new && *p != master)
        .expect("a third instance");
    let asked = Instant::now();
    t.replications()
        .patch(
            "cache",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {SWITCHOVER_ANNOTATION: &target_pod}}}),
            ),
        )
        .await
        .expect("annotate for a switchover");
    wait_for("the switchover", TIMEOUT, || async {
        let s = t.status("cache").await.ok_or("no status")?;
        match (&s.current_master, &s.last_failover) {
            (Some(m), Some(f))
                if *m == target_pod && f.kind == vigil::api::FailoverKind::Switchover =>
            {
                Ok(())
            }
            _ => Err(format!("{s:?}")),
        }
    })
    .await;
    eprintln!(
        "in-cluster operator: switchover to {target_pod} in {:.1}s",
        asked.elapsed().as_secs_f64()
    );
    t.wait_topology("cache", &target_pod, &password, TIMEOUT)
        .await;
    let target_ip = t.pod_ip(&target_pod).await;
    t.assert_keys_present(&target_ip, &password, &keys);
}

/// Opens a new connection through the master Service every 100 ms and writes, until 10
/// consecutive writes succeed (or 60 s pass). Reports when writes first succeeded again and how
/// long new connections still reached an instance that refused them (READONLY: the old master
/// back as a replica) or nothing.
fn write_through_service(
    redis_cli: &std::path::Path,
    ip: &str,
    password: &str,
    since: Instant,
) -> String {
    let (mut first_ok, mut last_refused, mut last_error) = (None, None, None);
    let mut streak = 0;
    let mut i = 0u64;
    while streak < 10 && since.elapsed() < Duration::from_secs(60) {
        i += 1;
        let out = std::process::Command::new(redis_cli)
            .args(["-h", ip, "-p", "6379", "--no-auth-warning", "-a", password])
            .args(["SET", "through-service", &i.to_string()])
            .output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let at = since.elapsed();
        if text == "OK" {
            first_ok.get_or_insert(at);
            streak += 1;
        } else {
            streak = 0;
            if text.starts_with("READONLY") {
                last_refused = Some(at);
            } else {
                last_error = Some(at);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs =
        |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64()));
    format!(
        "writes OK again after {}, last READONLY (old master) at {}, last failed connection at {}",
        secs(first_ok),
        secs(last_refused),
        secs(last_error)
    )
}

/// The Redis variant of the server image (`images/server`, SERVER=redis: Debian bookworm's
/// redis-server 7) replicates and fails a crashed master over like the Valkey default. Only the
/// local real node builds that variant.
#[tokio::test(flavor = "multi_thread")]
async fn the_redis_server_image_fails_over_too() {
    if target() != Target::Node {
        eprintln!("skipped: only the local real node builds the Redis variant of the server image");
        return;
    }
    let mut t = TestNs::new("redisimage").await;
    t.start_operator();
    let image = format!("{}-redis", vigil::api::DEFAULT_IMAGE);
    t.create_replication("cache", json!({"instances": 3, "image": image}))
        .await;
    let status = t.wait_ready("cache", 3, TIMEOUT).await;
    let master = status.current_master.clone().expect("master");
    let master_ip = t.pod_ip(&master).await;
    let password = t.password("cache").await;
    let server = t.redis_cli(&master_ip, Some(&password), &["INFO", "server"]);
    assert!(
        server.contains("redis_version:7.") && !server.contains("valkey_version"),
        "the Redis variant runs Redis 7: {server}"
    );
    let keys = t.write_acknowledged(&master_ip, &password, "before", 50);
    t.chaos(&master, Chaos::Crash);
    let status = t
        .wait_new_master("cache", &master, status.epoch, TIMEOUT)
        .await;
    let new = status.current_master.expect("new master");
    t.wait_topology("cache", &new, &password, TIMEOUT).await;
    let new_ip = t.pod_ip(&new).await;
    t.assert_keys_present(&new_ip, &password, &keys);
}
