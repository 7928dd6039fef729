//! Network partitions (safety rule 9; issue 15's scenarios a–d): iptables rules inside the pods'
//! network namespaces and on the operator's uid, while a sampler on the node (the clients' side)
//! writes to every instance at once. An isolated master must fence itself before a replica is
//! promoted, so no two instances ever take writes at the same time; a master that merely loses
//! the operator, or one replica, or its replicas but not the apiserver, keeps serving.

use std::time::{Duration, Instant};

use serde_json::json;
use vigil::isolation::fence_deadline;

use crate::support::partition::{Sample, Sampler, assert_one_writer_at_a_time};
use crate::support::{OperatorOptions, TestNs, wait_for};

const DOWN_AFTER: Duration = Duration::from_millis(1000);
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long a partition that must change nothing is held: several downAfter periods and far
/// more than the fence's tolerance.
const HOLD: Duration = Duration::from_secs(6);

/// A ready set of 3 watched by an operator running as `uid`, and its pods as (name, address),
/// the master first.
struct Set {
    master: String,
    epoch: i64,
    password: String,
    pods: Vec<(String, String)>,
}

async fn ready_set(t: &mut TestNs, uid: u32) -> (Set, crate::support::Operator) {
    let operator = t.spawn_operator(OperatorOptions {
        uid: Some(uid),
        tag: Some("partition"),
        ..OperatorOptions::default()
    });
    t.create_replication(
        "cache",
        json!({"instances": 3, "failover": {"downAfterMilliseconds": DOWN_AFTER.as_millis() as u64}}),
    )
    .await;
    let status = t.wait_ready("cache", 3, Duration::from_secs(120)).await;
    let master = status.current_master.clone().expect("master");
    let mut pods = Vec::new();
    for pod in t.pod_names("cache").await {
        let ip = t.pod_ip(&pod).await;
        pods.push((pod, ip));
    }
    pods.sort_by_key(|(p, _)| *p != master);
    let set = Set {
        master,
        epoch: status.epoch,
        password: t.password("cache").await,
        pods,
    };
    (set, operator)
}

fn accepted_on<'a>(samples: &'a [Sample], pod: &'a str) -> impl Iterator<Item = &'a Sample> {
    samples.iter().filter(move |s| s.pod == pod && s.accepted)
}

/// The longest time, from `from` on, between two writes `pod` accepted.
fn longest_gap(samples: &[Sample], pod: &str, from: Instant) -> Duration {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for s in accepted_on(samples, pod).filter(|s| s.invoked >= from) {
        gap = gap.max(s.completed.saturating_duration_since(last));
        last = s.completed;
    }
    gap
}

/// Every write a replica acknowledged (`WAIT 1`) is on `pod` now.
fn assert_acknowledged_kept(t: &TestNs, samples: &[Sample], ip: &str, password: &str) -> usize {
    let keys: Vec<String> = samples
        .iter()
        .filter_map(|s| s.acknowledged.clone())
        .collect();
    for chunk in keys.chunks(500) {
        t.assert_keys_present(ip, password, chunk);
    }
    keys.len()
}

/// Nothing may move while a partition that is no master failure lasts: the master keeps taking
/// writes (no gap near the fence's tolerance), stays master, and no epoch is spent.
async fn assert_nothing_moves(t: &TestNs, set: &Set, sampler: Sampler, cut_at: Instant) {
    tokio::time::sleep(HOLD).await;
    let samples = sampler.stop().await;
    let status = t.status("cache").await.expect("status");
    assert_eq!(status.current_master.as_deref(), Some(set.master.as_str()));
    assert_eq!(status.epoch, set.epoch, "no promotion");
    let gap = longest_gap(&samples, &set.master, cut_at);
    assert!(
        gap < Duration::from_millis(400),
        "the master stopped taking writes for {gap:?}: it fenced itself"
    );
    let role = t.redis_cli(&set.pods[0].1, Some(&set.password), &["ROLE"]);
    assert!(role.starts_with("master"), "ROLE of {}: {role}", set.master);
    assert_one_writer_at_a_time(&samples);
    let reasons = t.event_reasons("cache").await;
    assert!(
        !reasons.iter().any(|r| r == "FailoverStarted"),
        "{reasons:?}"
    );
}

/// (a) The master is cut off from the operator, its replicas and the apiserver; clients on the
/// node still reach it. It fences itself, a replica is promoted after that, and no instant has
/// two instances taking writes; every WAIT-acknowledged write survives the heal.
#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_master_fences_itself_before_a_replica_is_promoted() {
    if crate::support::skipped_on_kind("needs rules inside the pods' network namespaces") {
        return;
    }
    const UID: u32 = 4243;
    let mut t = TestNs::new("isolated").await;
    let (set, _operator) = ready_set(&mut t, UID).await;
    let (master, master_ip) = set.pods[0].clone();
    let sampler = Sampler::start(&set.pods, &set.password);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut peers: Vec<String> = set.pods[1..].iter().map(|(_, ip)| ip.clone()).collect();
    peers.push(t.apiserver_service_ip().await);
    let cut_at = Instant::now();
    let operator_cut = t.cut_uid_off(UID, Some(&master_ip));
    let pod_cut = t.cut_pod_off(&master, &peers);
    let status = t
        .wait_new_master("cache", &master, set.epoch, TIMEOUT)
        .await;
    let failed_over = cut_at.elapsed();
    let new = status.current_master.clone().expect("new master");
    wait_for("the isolated master to be fenced", TIMEOUT, || async {
        let role = t.redis_cli(&master_ip, Some(&set.password), &["ROLE"]);
        if role.starts_with("slave\n127.0.0.1\n1\n") {
            Ok(())
        } else {
            Err(role)
        }
    })
    .await;
    // Writes go on to both sides for a while longer before the heal.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(pod_cut);
    drop(operator_cut);
    let new_ip = set
        .pods
        .iter()
        .find(|(p, _)| *p == new)
        .map(|(_, ip)| ip.clone())
        .expect("the new master is one of the pods");
    t.wait_topology("cache", &new, &set.password, TIMEOUT).await;
    let samples = sampler.stop().await;

    let spans = assert_one_writer_at_a_time(&samples);
    let old_last = accepted_on(&samples, &master)
        .map(|s| s.completed)
        .max()
        .expect("the master took writes before the cut");
    let fenced_after = old_last.saturating_duration_since(cut_at);
    let first_new = spans
        .iter()
        .find(|(p, _, _)| *p == new)
        .map(|s| s.1)
        .expect("the new master took writes");
    eprintln!(
        "isolated master: took plain writes for {fenced_after:?} after the cut, a replica was \
         promoted after {failed_over:?} and took its first write {:?} after the cut; spans \
         {spans:?}",
        first_new.saturating_duration_since(cut_at)
    );
    // The fence's own bound, plus the operator's probe that noticed nothing (one interval).
    assert!(
        fenced_after <= fence_deadline(DOWN_AFTER) + Duration::from_secs(1),
        "the isolated master took writes for {fenced_after:?} after the cut"
    );
    let kept = assert_acknowledged_kept(&t, &samples, &new_ip, &set.password);
    assert!(kept > 0, "some writes were acknowledged");
    let reasons = t.event_reasons("cache").await;
    assert!(
        reasons.iter().any(|r| r == "FailoverCompleted"),
        "{reasons:?}"
    );
}

/// (b) The master is cut off from its replicas only: the operator and the apiserver still reach
/// it. No failover, and the apiserver's word keeps it serving plain writes.
#[tokio::test(flavor = "multi_thread")]
async fn a_master_cut_off_from_its_replicas_only_keeps_serving() {
    if crate::support::skipped_on_kind("needs rules inside the pods' network namespaces") {
        return;
    }
    let mut t = TestNs::new("noreplicas").await;
    let (set, _operator) = ready_set(&mut t, 4244).await;
    let sampler = Sampler::start(&set.pods, &set.password);
    let peers: Vec<String> = set.pods[1..].iter().map(|(_, ip)| ip.clone()).collect();
    let cut_at = Instant::now();
    let _cut = t.cut_pod_off(&set.master, &peers);
    assert_nothing_moves(&t, &set, sampler, cut_at).await;
}

/// (c) The operator is cut off from everything (pods and apiserver): no fencing, no failover.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_cut_off_from_everything_changes_nothing() {
    if crate::support::skipped_on_kind("needs root (operator under another uid, iptables rule)") {
        return;
    }
    const UID: u32 = 4245;
    let mut t = TestNs::new("opalone").await;
    let (set, _operator) = ready_set(&mut t, UID).await;
    let sampler = Sampler::start(&set.pods, &set.password);
    let cut_at = Instant::now();
    let _cut = t.cut_uid_off(UID, None);
    assert_nothing_moves(&t, &set, sampler, cut_at).await;
}

/// (d) One replica is cut off from the master, the other replica, the operator and the
/// apiserver: the master keeps a quorum and serves; no failover.
#[tokio::test(flavor = "multi_thread")]
async fn one_isolated_replica_fences_nothing_and_fails_nothing_over() {
    if crate::support::skipped_on_kind("needs rules inside the pods' network namespaces") {
        return;
    }
    const UID: u32 = 4246;
    let mut t = TestNs::new("onereplica").await;
    let (set, _operator) = ready_set(&mut t, UID).await;
    let (replica, replica_ip) = set.pods[2].clone();
    let sampler = Sampler::start(&set.pods, &set.password);
    let mut peers = vec![set.pods[0].1.clone(), set.pods[1].1.clone()];
    peers.push(t.apiserver_service_ip().await);
    let cut_at = Instant::now();
    let _operator_cut = t.cut_uid_off(UID, Some(&replica_ip));
    let _cut = t.cut_pod_off(&replica, &peers);
    assert_nothing_moves(&t, &set, sampler, cut_at).await;
}
