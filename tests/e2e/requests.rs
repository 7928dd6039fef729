//! The day-2 requests as annotations, the way `kubectl annotate` (and `kubectl vigil`) writes
//! them: fencing keeps an instance's data but takes it out of service, hibernation stops every
//! pod and wakes with the same master and data, a restart replaces every pod master last. Each
//! checked against what Redis reports and what the Services route to.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use vigil::api::requests::{
    FENCED_INSTANCES_ANNOTATION, HIBERNATION_ANNOTATION, RESTART_ANNOTATION,
};
use vigil::api::{FailoverKind, HibernationState, InstanceRole, Phase, RedisReplicationStatus};

use crate::support::{TestNs, wait_for};

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(90);

/// Sets (or, with `None`, removes) an annotation of the replication.
async fn annotate(t: &TestNs, name: &str, key: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    t.replications()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("annotate {name} {key}={value:?}: {e}"));
}

async fn wait_status(
    t: &TestNs,
    what: &str,
    name: &str,
    check: impl Fn(&RedisReplicationStatus) -> bool,
) -> RedisReplicationStatus {
    wait_for(what, CHANGE_TIMEOUT, || async {
        let status = t.status(name).await.ok_or("no status")?;
        match check(&status) {
            true => Ok(status),
            false => Err(format!("{status:?}")),
        }
    })
    .await
}

fn role_of(status: &RedisReplicationStatus, pod: &str) -> Option<InstanceRole> {
    status
        .instances
        .iter()
        .find(|i| i.name == pod)
        .map(|i| i.role)
}

async fn pod_uids(t: &TestNs, name: &str) -> BTreeMap<String, String> {
    let mut uids = BTreeMap::new();
    for pod in t.pod_names(name).await {
        if let Ok(p) = t.pods().get(&pod).await {
            uids.insert(pod, p.uid().unwrap_or_default());
        }
    }
    uids
}

/// A fenced replica refuses writes, leaves the replicas Service and keeps its data; a fenced
/// master stops the set's writes and no failover replaces it; unfenced, each rejoins (the master
/// as master, at the next epoch) with every write.
#[tokio::test(flavor = "multi_thread")]
async fn fencing_takes_an_instance_out_of_service_with_its_data_and_unfencing_restores_it() {
    let mut t = TestNs::new("fence").await;
    let set = t.ready_replication("cache", 3).await;
    let (master, pw) = (set.master.clone(), set.password.clone());
    let replica = t
        .pod_names("cache")
        .await
        .into_iter()
        .find(|p| *p != master)
        .expect("a replica");
    let replica_ip = t.pod_ip(&replica).await;
    let before = t.write_acknowledged(&set.master_ip, &pw, "before", 20);

    annotate(
        &t,
        "cache",
        FENCED_INSTANCES_ANNOTATION,
        Some(&format!("[\"{replica}\"]")),
    )
    .await;
    wait_status(&t, "the replica fenced", "cache", |s| {
        s.fenced_instances == [replica.clone()]
            && role_of(s, &replica) == Some(InstanceRole::Fenced)
    })
    .await;
    let label = t
        .pods()
        .get(&replica)
        .await
        .expect("pod")
        .labels()
        .get("redis.vigil.dev/role")
        .cloned();
    assert_eq!(label, None, "a fenced instance carries no role label");
    let refused = t.redis_cli(&replica_ip, Some(&pw), &["SET", "fenced", "1"]);
    assert!(
        refused.contains("READONLY"),
        "a fenced replica refuses writes: {refused}"
    );
    let replicas_now = t.endpoint_addresses("cache-replicas").await;
    assert!(
        !replicas_now.contains(&replica_ip),
        "{replica_ip} left cache-replicas: {replicas_now:?}"
    );
    t.assert_keys_present(&replica_ip, &pw, &before);
    let during = t.write_acknowledged(&set.master_ip, &pw, "during", 10);
    assert_eq!(
        t.redis_cli(&replica_ip, Some(&pw), &["EXISTS", &during[0]]),
        "0",
        "nothing replicates into a fenced instance"
    );
    assert!(
        t.event_reasons("cache")
            .await
            .contains(&"Fenced".to_string())
    );

    annotate(&t, "cache", FENCED_INSTANCES_ANNOTATION, None).await;
    t.wait_ready("cache", 3, READY_TIMEOUT).await;
    t.assert_keys_present(&replica_ip, &pw, &during);

    annotate(
        &t,
        "cache",
        FENCED_INSTANCES_ANNOTATION,
        Some(&format!("[\"{master}\"]")),
    )
    .await;
    let fenced = wait_status(&t, "the master fenced", "cache", |s| {
        s.phase == Some(Phase::Fenced) && role_of(s, &master) == Some(InstanceRole::Fenced)
    })
    .await;
    let refused = t.redis_cli(&set.master_ip, Some(&pw), &["SET", "fenced", "1"]);
    assert!(
        refused.contains("READONLY"),
        "a fenced master refuses writes: {refused}"
    );
    assert_eq!(t.endpoint_addresses("cache-master").await, BTreeSet::new());
    assert_eq!(
        fenced.current_master.as_deref(),
        Some(master.as_str()),
        "no failover"
    );

    annotate(&t, "cache", FENCED_INSTANCES_ANNOTATION, None).await;
    let back = t.wait_ready("cache", 3, READY_TIMEOUT).await;
    assert_eq!(back.current_master.as_deref(), Some(master.as_str()));
    assert!(
        back.epoch > fenced.epoch,
        "reinstating is a recorded promotion"
    );
    t.write_acknowledged(&set.master_ip, &pw, "after", 5);
    t.assert_keys_present(&set.master_ip, &pw, &[before, during].concat());
}

/// Hibernation stops every pod, replicas first, keeping the claims; waking brings the same
/// master back with every acknowledged write.
#[tokio::test(flavor = "multi_thread")]
async fn hibernation_stops_every_pod_and_wakes_with_the_same_master_and_data() {
    let mut t = TestNs::new("hibernate").await;
    t.start_operator();
    t.create_replication("cache", json!({"instances": 3, "storage": {"size": "1Gi"}}))
        .await;
    let ready = t.wait_ready("cache", 3, READY_TIMEOUT).await;
    let master = ready.current_master.clone().expect("master");
    let pw = t.password("cache").await;
    let keys = t.write_acknowledged(&t.pod_ip(&master).await, &pw, "kept", 50);

    annotate(&t, "cache", HIBERNATION_ANNOTATION, Some("on")).await;
    wait_status(&t, "the set hibernated", "cache", |s| {
        s.hibernation == Some(HibernationState::Hibernated) && s.phase == Some(Phase::Hibernated)
    })
    .await;
    assert_eq!(t.pod_names("cache").await, BTreeSet::new(), "no pod runs");
    let claims = t.kubectl(&["get", "pvc", "-n", &t.name, "-o", "name"]);
    assert_eq!(
        String::from_utf8_lossy(&claims.stdout).lines().count(),
        3,
        "claims kept"
    );

    annotate(&t, "cache", HIBERNATION_ANNOTATION, Some("off")).await;
    let woken = t.wait_ready("cache", 3, Duration::from_secs(180)).await;
    assert_eq!(
        woken.current_master.as_deref(),
        Some(master.as_str()),
        "the same master"
    );
    assert_eq!(woken.hibernation, None);
    let master_ip = t.pod_ip(&master).await;
    t.assert_keys_present(&master_ip, &pw, &keys);
    let reasons = t.event_reasons("cache").await;
    for reason in ["Hibernating", "Hibernated", "Woken"] {
        assert!(
            reasons.contains(&reason.to_string()),
            "{reason} in {reasons:?}"
        );
    }
}

/// A set whose data lives in its pods is not hibernated: the request is refused in the status
/// and nothing stops.
#[tokio::test(flavor = "multi_thread")]
async fn hibernation_is_refused_where_it_would_lose_the_data() {
    let mut t = TestNs::new("hibernate-refused").await;
    let set = t.ready_replication("cache", 2).await;
    let uids = pod_uids(&t, "cache").await;
    annotate(&t, "cache", HIBERNATION_ANNOTATION, Some("on")).await;
    let refused = wait_status(&t, "the request refused", "cache", |s| {
        s.conditions.iter().any(|c| {
            c.type_ == "RequestsAccepted" && c.status == "False" && c.reason == "HibernationRefused"
        })
    })
    .await;
    assert_eq!(refused.hibernation, None);
    assert_eq!(pod_uids(&t, "cache").await, uids, "every pod still runs");
    assert_eq!(refused.current_master, Some(set.master));
}

/// A restart request replaces every pod through the rolling update, the master last after a
/// switchover.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_request_replaces_every_pod_the_master_last() {
    let mut t = TestNs::new("restart-request").await;
    let set = t.ready_replication("cache", 3).await;
    let uids = pod_uids(&t, "cache").await;
    let keys = t.write_acknowledged(&set.master_ip, &set.password, "restart", 20);
    annotate(
        &t,
        "cache",
        RESTART_ANNOTATION,
        Some("2026-12-02T19:00:00Z"),
    )
    .await;
    let done = wait_for("every pod replaced", Duration::from_secs(240), || async {
        let now = pod_uids(&t, "cache").await;
        let replaced = now.iter().filter(|(p, u)| uids.get(*p) != Some(u)).count();
        let status = t.status("cache").await.ok_or("no status")?;
        let settled = status.phase == Some(Phase::Ready) && status.updated_instances == 3;
        match replaced == 3 && settled {
            true => Ok(status),
            false => Err(format!("{replaced}/3 replaced, {status:?}")),
        }
    })
    .await;
    let last = done.last_failover.expect("the master handed over");
    assert_eq!(
        (last.kind, last.from.as_str()),
        (FailoverKind::Switchover, set.master.as_str())
    );
    let master_ip = t
        .pod_ip(done.current_master.as_deref().expect("master"))
        .await;
    t.assert_keys_present(&master_ip, &set.password, &keys);
}
