//! End-to-end scenarios on the local cluster (real apiserver, controller-manager, and the real node
//! of `tests/node/`: kubelet, containerd, the images built from `images/`). Run by `make test`
//! through `tests/e2e.sh`; on kind by `tests/kind/e2e.sh`.

mod backup;
mod chart;
mod client_matrix;
mod day2;
mod discovery;
mod failover;
mod incluster;
mod object_store;
mod partition;
mod plugin;
mod plugin_fence;
mod plugin_hibernate_restart;
mod problems;
mod replica_of;
mod requests;
mod resp_shape;
mod restart;
mod sentinel_secure;
mod sentinel_shape;
mod shape;
mod storage;
mod support;
mod tls;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use support::{ReadySet, TestNs, wait_for};
use vigil::api::RedisReplication;

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Ready replication: master with two linked replicas; data flows; replicas refuse writes;
/// clients need the password; Services route by role.
#[tokio::test(flavor = "multi_thread")]
async fn three_instances_replicate_and_services_follow_roles() {
    let mut t = TestNs::new("replicate").await;
    let ReadySet {
        status,
        master,
        master_ip,
        password,
    } = t.ready_replication("cache", 3).await;
    assert_eq!(status.epoch, 1, "bootstrap is the first promotion");
    assert_eq!(
        status.master_address.as_deref(),
        Some(format!("{master_ip}:6379").as_str())
    );

    assert_eq!(
        t.info_field(&master_ip, &password, "role").as_deref(),
        Some("master")
    );
    assert_eq!(
        t.info_field(&master_ip, &password, "connected_slaves")
            .as_deref(),
        Some("2")
    );

    assert_eq!(
        t.redis_cli(&master_ip, Some(&password), &["SET", "greeting", "hello"]),
        "OK"
    );
    let replicas: Vec<String> = t
        .pod_names("cache")
        .await
        .into_iter()
        .filter(|p| *p != master)
        .collect();
    assert_eq!(replicas.len(), 2);
    let mut replica_ips = BTreeSet::new();
    for replica in &replicas {
        let ip = t.pod_ip(replica).await;
        wait_for(
            &format!("greeting replicated to {replica}"),
            Duration::from_secs(20),
            || async {
                let v = t.redis_cli(&ip, Some(&password), &["GET", "greeting"]);
                if v == "hello" { Ok(()) } else { Err(v) }
            },
        )
        .await;
        let refused = t.redis_cli(&ip, Some(&password), &["SET", "greeting", "bye"]);
        assert!(
            refused.starts_with("READONLY"),
            "write on replica {replica}: {refused}"
        );
        replica_ips.insert(ip);
    }
    let anonymous = t.redis_cli(&master_ip, None, &["GET", "greeting"]);
    assert!(
        anonymous.starts_with("NOAUTH"),
        "client without password: {anonymous}"
    );

    t.wait_endpoints("cache-master", BTreeSet::from([master_ip.clone()]))
        .await;
    t.wait_endpoints("cache-replicas", replica_ips).await;

    // spec.failover.minReplicasToWrite follows the spec live, on the real master.
    let guard = |ip: &str| {
        t.redis_cli(
            ip,
            Some(&password),
            &["CONFIG", "GET", "min-replicas-to-write"],
        )
    };
    assert!(guard(&master_ip).ends_with("\n0"), "{}", guard(&master_ip));
    t.patch_spec("cache", json!({"failover": {"minReplicasToWrite": 1}}))
        .await;
    wait_for(
        "min-replicas-to-write 1 on the master",
        Duration::from_secs(30),
        || async {
            let v = guard(&master_ip);
            if v.ends_with("\n1") { Ok(()) } else { Err(v) }
        },
    )
    .await;

    let printed = t.kubectl(&["get", "redisreplication", "cache", "-n", &t.name]);
    let table = String::from_utf8_lossy(&printed.stdout);
    for column in ["INSTANCES", "READY", "MASTER", "PHASE", "AGE"] {
        assert!(
            table.contains(column),
            "printer column {column} in:\n{table}"
        );
    }
    assert!(
        table.contains(&master) && table.contains("Ready"),
        "{table}"
    );
}

/// Scaling 3 -> 5 -> 2: the set follows and every replica replicates after each step.
#[tokio::test(flavor = "multi_thread")]
async fn scaling_up_and_down_keeps_replication() {
    let mut t = TestNs::new("scale").await;
    let ReadySet {
        master,
        master_ip,
        password,
        ..
    } = t.ready_replication("cache", 3).await;
    assert_eq!(
        t.redis_cli(&master_ip, Some(&password), &["SET", "k", "v1"]),
        "OK"
    );

    for (instances, expected_pods) in [(5, 5usize), (2, 2usize)] {
        t.patch_spec("cache", json!({"instances": instances})).await;
        let status = t.wait_ready("cache", instances, READY_TIMEOUT).await;
        assert_eq!(
            status.current_master.as_deref(),
            Some(master.as_str()),
            "master kept"
        );
        wait_for(
            &format!("{expected_pods} pods"),
            Duration::from_secs(60),
            || async {
                let pods = t.pod_names("cache").await;
                if pods.len() == expected_pods {
                    Ok(())
                } else {
                    Err(format!("{pods:?}"))
                }
            },
        )
        .await;
        assert_eq!(
            t.info_field(&master_ip, &password, "connected_slaves"),
            Some((instances - 1).to_string())
        );
        for pod in t.pod_names("cache").await {
            let ip = t.pod_ip(&pod).await;
            assert_eq!(
                t.redis_cli(&ip, Some(&password), &["GET", "k"]),
                "v1",
                "data on {pod}"
            );
        }
    }
    let pods = t.pod_names("cache").await;
    assert!(
        pods.contains(&master),
        "the master survives a scale-down: {pods:?}"
    );
}

/// A deleted replica pod is recreated and rejoins as a replica with the data (a plain Redis
/// would forget it was a replica after a restart).
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_replica_comes_back_as_a_replica_with_the_data() {
    let mut t = TestNs::new("rejoin").await;
    let ReadySet {
        master,
        master_ip,
        password,
        ..
    } = t.ready_replication("cache", 3).await;
    for i in 0..100 {
        assert_eq!(
            t.redis_cli(
                &master_ip,
                Some(&password),
                &["SET", &format!("key:{i}"), &i.to_string()]
            ),
            "OK"
        );
    }
    let victim = t
        .pod_names("cache")
        .await
        .into_iter()
        .find(|p| *p != master)
        .expect("a replica");
    t.delete_pod_and_wait_replaced(&victim).await;
    let status = t.wait_ready("cache", 3, READY_TIMEOUT).await;
    assert_eq!(status.current_master.as_deref(), Some(master.as_str()));
    let ip = t.pod_ip(&victim).await;
    assert_eq!(
        t.info_field(&ip, &password, "role").as_deref(),
        Some("slave")
    );
    assert_eq!(
        t.info_field(&ip, &password, "master_host").as_deref(),
        Some(master_ip.as_str())
    );
    assert_eq!(t.redis_cli(&ip, Some(&password), &["DBSIZE"]), "100");
    assert_eq!(t.redis_cli(&ip, Some(&password), &["GET", "key:42"]), "42");
}

/// Deleting the RedisReplication removes everything it owned (garbage collection by owner).
#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_replication_removes_everything_it_owned() {
    let mut t = TestNs::new("delete").await;
    t.ready_replication("cache", 2).await;
    t.replications()
        .delete("cache", &DeleteParams::foreground())
        .await
        .expect("delete RedisReplication");

    let selector = "redis.vigil.dev/replication=cache";
    let ns = t.name.clone();
    let client = t.admin.clone();
    wait_for("every owned object gone", Duration::from_secs(90), || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let lp = ListParams::default().labels(selector);
            let mut left = Vec::new();
            macro_rules! count {
                ($k:ty) => {
                    let n = Api::<$k>::namespaced(client.clone(), &ns)
                        .list(&lp)
                        .await
                        .map_err(|e| e.to_string())?
                        .items
                        .len();
                    if n > 0 {
                        left.push(format!("{n} {}", stringify!($k)));
                    }
                };
            }
            count!(Pod);
            count!(Service);
            count!(ConfigMap);
            count!(Secret);
            count!(ServiceAccount);
            count!(Role);
            count!(RoleBinding);
            count!(RedisReplication);
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join(", "))
            }
        }
    })
    .await;
}

/// Invalid specs are rejected by the real apiserver at create time, naming the field.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_specs_are_rejected_naming_the_field() {
    let t = TestNs::new("invalid").await;
    let cases = [
        (json!({"instances": 0}), "spec.instances"),
        (json!({}), "spec.instances"),
        (
            json!({"instances": 3, "failover": {"downAfterMilliseconds": -5}}),
            "spec.failover.downAfterMilliseconds",
        ),
        (
            json!({"instances": 3, "imagePullPolicy": "Sometimes"}),
            "spec.imagePullPolicy",
        ),
        (
            json!({"instances": 3, "config": {"port": "7000"}}),
            "config key 'port' is managed by vigil",
        ),
        (
            json!({"instances": 3, "config": {"ReplicaOf": "10.0.0.1 6379"}}),
            "config key 'ReplicaOf' is managed by vigil",
        ),
        (
            json!({"instances": 3, "auth": {"enabled": false, "existingSecret": {"name": "s"}}}),
            "spec.auth.existingSecret",
        ),
        (json!({"instances": "three"}), "spec.instances"),
        (
            json!({"instances": 1, "storage": {"size": "lots"}}),
            "size must be a positive quantity",
        ),
        (
            json!({"instances": 1, "persistence": "Sometimes"}),
            "spec.persistence",
        ),
        (json!({"instances": 3, "topology": "Ring"}), "spec.topology"),
        (
            json!({"instances": 3, "failover": {"minReplicasToWrite": 65}}),
            "spec.failover.minReplicasToWrite",
        ),
        (
            json!({"instances": 3, "sentinelMasterName": "no spaces allowed"}),
            "spec.sentinelMasterName",
        ),
    ];
    for (spec, expected) in cases {
        t.assert_rejected(&spec, &[expected]).await;
    }
    // A valid one still passes, so the cases above fail for their own reason.
    let ok: RedisReplication = serde_json::from_value(json!({
        "apiVersion": "redis.vigil.dev/v1alpha1", "kind": "RedisReplication",
        "metadata": {"name": "good"}, "spec": {"instances": 1, "config": {"maxmemory": "10mb"}},
    }))
    .expect("valid");
    t.replications()
        .create(&PostParams::default(), &ok)
        .await
        .expect("a valid spec is accepted");
}

/// The operator in these tests authenticates as the chart's ServiceAccount, and that identity
/// is really limited to what the chart grants.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_acts_with_the_chart_rbac_only() {
    let t = TestNs::new("rbac").await;
    let operator = support::client_from(&t.env.operator_kubeconfig).await;
    let review: serde_json::Value = operator
        .request(
            http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
                .header("content-type", "application/json")
                .body(
                    serde_json::to_vec(&json!({
                        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"
                    }))
                    .expect("body"),
                )
                .expect("request"),
        )
        .await
        .expect("self subject review");
    assert_eq!(
        review["status"]["userInfo"]["username"], "system:serviceaccount:vigil-system:vigil",
        "{review}"
    );
    // Granted by the chart:
    Api::<Pod>::namespaced(operator.clone(), &t.name)
        .list(&ListParams::default())
        .await
        .expect("the chart grants listing pods");
    // Not granted by the chart:
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(operator.clone())
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(nodes, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{nodes:?}"
    );
    let secrets = Api::<Secret>::namespaced(operator, &t.name)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(secrets, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{secrets:?}"
    );
}

/// `helm lint` passes and the rendered chart is accepted by the apiserver (server-side dry run),
/// with the default values and watching one namespace.
#[tokio::test(flavor = "multi_thread")]
async fn the_chart_lints_and_renders_objects_the_apiserver_accepts() {
    let t = TestNs::new("chart").await;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/vigil");
    let lint = std::process::Command::new(&t.env.helm)
        .args(["lint", "--strict", chart])
        .output()
        .expect("helm lint");
    assert!(
        lint.status.success(),
        "helm lint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );

    for extra in [
        vec![],
        vec!["--set".to_string(), format!("watchNamespace={}", t.name)],
    ] {
        let rendered = std::process::Command::new(&t.env.helm)
            .args(["template", "vigil", chart, "--namespace", &t.name])
            .args(&extra)
            .output()
            .expect("helm template");
        assert!(
            rendered.status.success(),
            "helm template: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let manifest = t
            .env
            .artifacts
            .join(format!("{}-chart{}.yaml", t.name, extra.len()));
        std::fs::write(&manifest, &rendered.stdout).expect("write manifest");
        let (passed, out) = t.server_dry_run(&manifest);
        assert!(passed, "dry run of the chart {extra:?}: {out}");
        for kind in [
            "serviceaccount/vigil",
            "deployment.apps/vigil",
            "customresourcedefinition",
        ] {
            assert!(out.contains(kind), "{kind} in dry run output: {out}");
        }
    }
}
