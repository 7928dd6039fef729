//! Storage and persistence: with `storage`, an instance's data is on its own claim and survives
//! the deletion of its pod, and with `retention: Retain` the deletion of the replication.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::support::{TestNs, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn storage_keeps_the_data_when_the_pod_is_deleted() {
    let mut t = TestNs::new("storage").await;
    t.start_operator();
    t.create_replication("cache", json!({"instances": 1, "storage": {"size": "1Gi"}}))
        .await;
    let status = t.wait_ready("cache", 1, Duration::from_secs(120)).await;
    let pod = status.current_master.expect("master");
    let ip = t.pod_ip(&pod).await;
    let password = t.password("cache").await;
    for i in 0..100 {
        let key = format!("durable:{i}");
        assert_eq!(
            t.redis_cli(&ip, Some(&password), &["SET", &key, &i.to_string()]),
            "OK"
        );
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(t.admin.clone(), &t.name);
    let claim = claims
        .get(&format!("data-{pod}"))
        .await
        .expect("the instance's claim");
    assert!(
        claim
            .owner_references()
            .iter()
            .any(|o| o.kind == "RedisReplication"),
        "deleted with the replication by default"
    );

    t.delete_pod_and_wait_replaced(&pod).await;
    t.wait_ready("cache", 1, Duration::from_secs(90)).await;
    let ip = t.pod_ip(&pod).await;
    assert_eq!(t.redis_cli(&ip, Some(&password), &["DBSIZE"]), "100");
    assert_eq!(
        t.redis_cli(&ip, Some(&password), &["GET", "durable:42"]),
        "42"
    );
    let uid = claims
        .get(&format!("data-{pod}"))
        .await
        .expect("claim")
        .uid();
    assert_eq!(uid, claim.uid(), "the same claim, not a new one");
}

/// `retention: Retain`: the claims outlive the replication (the garbage collector removes its
/// pods, not their data), and a replication of the same name made later starts from that data.
#[tokio::test(flavor = "multi_thread")]
async fn retained_claims_outlive_the_replication_and_are_reused() {
    let mut t = TestNs::new("retain").await;
    t.start_operator();
    let spec = json!({"instances": 1, "storage": {"size": "1Gi", "retention": "Retain"},
        "auth": {"enabled": false}});
    t.create_replication("cache", spec.clone()).await;
    t.wait_ready("cache", 1, Duration::from_secs(120)).await;
    let ip = t.pod_ip("cache-0").await;
    assert_eq!(t.redis_cli(&ip, None, &["SET", "kept", "yes"]), "OK");

    t.replications()
        .delete("cache", &DeleteParams::default())
        .await
        .expect("delete the replication");
    wait_for("the pod gone", Duration::from_secs(90), || async {
        let pods = t.pod_names("cache").await;
        if pods.is_empty() {
            Ok(())
        } else {
            Err(format!("{pods:?}"))
        }
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(t.admin.clone(), &t.name);
    let claim = claims.get("data-cache-0").await.expect("the claim is kept");
    assert!(
        claim.owner_references().is_empty(),
        "a retained claim has no owner: {:?}",
        claim.owner_references()
    );

    t.create_replication("cache", spec).await;
    t.wait_ready("cache", 1, Duration::from_secs(120)).await;
    let ip = t.pod_ip("cache-0").await;
    assert_eq!(t.redis_cli(&ip, None, &["GET", "kept"]), "yes");
}
