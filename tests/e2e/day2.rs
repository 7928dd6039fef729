//! Day-2 operations on real processes: a user's switchover, a rolling update, a scale-down past
//! the master, `chain` topology and live config, each checked against what Redis itself reports
//! and, under a continuous writer, against every write a replica acknowledged (`WAIT 1`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use vigil::api::{FailoverKind, RedisReplicationStatus};
use vigil::labels::{CONFIG_ANNOTATION, SWITCHOVER_ANNOTATION};

use crate::support::clients::{ClientProcess, Library};
use crate::support::{Chaos, TestNs, wait_for};

const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A rolling update of three instances: three pods replaced one at a time, each synced, plus a
/// switchover.
const ROLL_TIMEOUT: Duration = Duration::from_secs(240);

/// Asks the operator to make `target` the master, as a user would (`kubectl annotate`).
pub(crate) async fn request_switchover(t: &TestNs, name: &str, target: &str) {
    let patch = json!({"metadata": {"annotations": {SWITCHOVER_ANNOTATION: target}}});
    t.replications()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("annotate {name} to switch over to {target}: {e}"));
}

/// Waits until `target` is the recorded master, the switchover recorded in `lastFailover`, and
/// the request annotation gone.
pub(crate) async fn wait_switched_to(
    t: &TestNs,
    name: &str,
    target: &str,
) -> RedisReplicationStatus {
    wait_for(
        &format!("{name} to switch over to {target}"),
        Duration::from_secs(60),
        || async {
            let rr = t
                .replications()
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let pending = rr.annotations().get(SWITCHOVER_ANNOTATION).cloned();
            let status = rr.status.ok_or("no status")?;
            let recorded = status.last_failover.as_ref().map(|f| f.epoch) == Some(status.epoch);
            match (&status.current_master, pending) {
                (Some(m), None) if m == target && recorded => Ok(status),
                (m, p) => Err(format!(
                    "master {m:?}, request {p:?}, last failover {:?}",
                    status.last_failover
                )),
            }
        },
    )
    .await
}

/// The pod names of `name`, the master first, then by ordinal: the chain as it should be.
async fn chain_order(t: &TestNs, name: &str, master: &str) -> Vec<String> {
    let mut pods: Vec<String> = t
        .pod_names(name)
        .await
        .into_iter()
        .filter(|p| p != master)
        .collect();
    pods.sort_by_key(|p| p.rsplit('-').next().and_then(|o| o.parse::<u32>().ok()));
    [vec![master.to_string()], pods].concat()
}

/// Waits until every link of the chain follows the previous one, linked, as Redis reports it.
async fn wait_chain(t: &TestNs, name: &str, password: &str) -> Vec<String> {
    wait_for(
        &format!("{name} replicating as a chain"),
        Duration::from_secs(90),
        || async {
            let status = t.status(name).await.ok_or("no status")?;
            let master = status.current_master.ok_or("no master")?;
            let chain = chain_order(t, name, &master).await;
            for pair in chain.windows(2) {
                let upstream = t.pod_ip(&pair[0]).await;
                let ip = t.pod_ip(&pair[1]).await;
                let host = t.info_field(&ip, password, "master_host");
                let link = t.info_field(&ip, password, "master_link_status");
                if host.as_deref() != Some(upstream.as_str()) || link.as_deref() != Some("up") {
                    return Err(format!(
                        "{} follows {host:?} (link {link:?}), not {} at {upstream}",
                        pair[1], pair[0]
                    ));
                }
            }
            Ok(chain)
        },
    )
    .await
}

/// The pods the rolling update replaced, in order, from its `RollingUpdate` Events.
async fn replacement_order(t: &TestNs, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(t.admin.clone(), &t.name);
    let mut rolled: Vec<_> = events
        .list(&ListParams::default().fields(&format!("regarding.name={name}")))
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RollingUpdate"))
        .collect();
    rolled.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    rolled
        .iter()
        .filter_map(|e| {
            let note = e.note.as_deref()?;
            Some(
                note.strip_prefix("replacing ")?
                    .split(' ')
                    .next()?
                    .to_string(),
            )
        })
        .collect()
}

/// Waits until the writer has 20 acknowledged writes on `pod`; returns its IP.
async fn wait_acknowledged_on(t: &TestNs, writer: &ClientProcess, pod: &str) -> String {
    let ip = t.pod_ip(pod).await;
    let on = format!(" {ip}:6379");
    writer
        .wait_lines(
            &format!("acknowledged writes on {pod}"),
            Duration::from_secs(30),
            20,
            |l| l.starts_with("ok ") && l.ends_with(&on),
        )
        .await;
    ip
}

/// Asserts every key is on the instance at `ip`, in batches that fit a command line.
fn assert_all_present(t: &TestNs, ip: &str, password: &str, keys: &[String]) {
    for batch in keys.chunks(500) {
        t.assert_keys_present(ip, password, batch);
    }
}

/// The writes a `--wait 1` writer saw acknowledged, as keys, and the longest pause between two
/// consecutive acknowledgements inside `window`.
fn acknowledged(
    lines: &[(Instant, String)],
    window: (Instant, Instant),
) -> (Vec<String>, Duration) {
    let acks: Vec<(Instant, &str)> = lines
        .iter()
        .filter_map(|(at, l)| Some((*at, l.strip_prefix("ok ")?.split(' ').next()?)))
        .collect();
    let keys = acks.iter().map(|(_, i)| format!("vigil:py:{i}")).collect();
    let pause = acks
        .windows(2)
        .filter(|w| w[1].0 >= window.0 && w[0].0 <= window.1)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    (keys, pause)
}

/// A user switchover and then a rolling image change, while redis-py writes through the
/// Sentinel endpoint and waits for a replica to acknowledge each write: every acknowledged
/// write is on the final master; the rolling update replaces the replicas first and the master
/// last, after a switchover; the write pauses are measured.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_switchover_and_a_rolling_update_lose_no_acknowledged_write() {
    let mut t = TestNs::new("rolling").await;
    t.start_operator();
    t.create_replication(
        "cache",
        json!({"instances": 3, "failover": {"downAfterMilliseconds": 1000}}),
    )
    .await;
    let status = t.wait_ready("cache", 3, READY_TIMEOUT).await;
    let first = status.current_master.clone().expect("master");
    let password = t.password("cache").await;
    let mut writer_cmd = Library::RedisPy.command(
        t.sentinel_port(),
        &format!("{}.cache", t.name),
        &password,
        "write",
    );
    writer_cmd.args(["--wait", "1", "--interval", "0.01", "--duration", "600"]);
    let writer = ClientProcess::spawn(&t, "writer", writer_cmd);
    writer
        .wait_lines("acknowledged writes", Duration::from_secs(60), 20, |l| {
            l.starts_with("ok ")
        })
        .await;

    let target = t
        .pod_names("cache")
        .await
        .into_iter()
        .rfind(|p| *p != first)
        .expect("a replica");
    let switch_started = Instant::now();
    request_switchover(&t, "cache", &target).await;
    let status = wait_switched_to(&t, "cache", &target).await;
    let record = status.last_failover.clone().expect("lastFailover");
    assert_eq!(
        (record.kind, record.from.as_str()),
        (FailoverKind::Switchover, first.as_str())
    );
    wait_acknowledged_on(&t, &writer, &target).await;
    let switch_done = Instant::now();

    let uids_before: BTreeMap<String, String> = t
        .pods()
        .list(&Default::default())
        .await
        .expect("pods")
        .into_iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();
    let new_image = "ghcr.io/vigil-dev/vigil-server:0.1.1-rolling";
    let roll_started = Instant::now();
    t.patch_spec("cache", json!({"image": new_image})).await;
    let status = wait_for(
        "every pod replaced with the new image",
        ROLL_TIMEOUT,
        || async {
            let pods = t
                .pods()
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let old: Vec<String> = pods
                .iter()
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.containers[0].image.as_deref())
                        != Some(new_image)
                })
                .map(|p| p.name_any())
                .collect();
            let status = t.status("cache").await.ok_or("no status")?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if old.is_empty() && pods.items.len() == 3 && status.updated_instances == 3 && ready {
                Ok(status)
            } else {
                Err(format!(
                    "old pods {old:?}, updated {}, conditions {:?}",
                    status.updated_instances, status.conditions
                ))
            }
        },
    )
    .await;
    let roll_done = Instant::now();
    let final_master = status.current_master.clone().expect("master");
    assert_ne!(
        final_master, target,
        "the master hands over before its pod is replaced"
    );

    let pods = t.pods().list(&Default::default()).await.expect("pods");
    for pod in &pods {
        assert_ne!(
            uids_before.get(&pod.name_any()),
            pod.uid().as_ref(),
            "{} was replaced",
            pod.name_any()
        );
    }
    let replaced = replacement_order(&t, "cache").await;
    assert_eq!(
        replaced.len(),
        3,
        "one RollingUpdate event per instance: {replaced:?}"
    );
    assert_eq!(
        replaced.last(),
        Some(&target),
        "the master of the time is replaced last: {replaced:?}"
    );

    let final_ip = wait_acknowledged_on(&t, &writer, &final_master).await;
    let lines = writer.lines();
    drop(writer);
    let (_, switch_pause) = acknowledged(&lines, (switch_started, switch_done));
    let (keys, roll_pause) = acknowledged(&lines, (roll_started, roll_done));
    assert_all_present(&t, &final_ip, &password, &keys);
    let unacked = lines
        .iter()
        .filter(|(_, l)| l.starts_with("unacked"))
        .count();
    let errors = lines.iter().filter(|(_, l)| l.starts_with("err")).count();
    eprintln!(
        "rolling: {} writes acknowledged by WAIT 1, all on the final master {final_master}; \
         {unacked} not acknowledged, {errors} failed and retried; user switchover {first} -> \
         {target}: longest write pause {switch_pause:?}; rolling update ({:?}): longest write \
         pause {roll_pause:?}",
        keys.len(),
        roll_done - roll_started,
    );
}

/// Scaling 3 -> 1 while the master is the highest-numbered instance: it hands over to
/// instance 0 first, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread")]
async fn scaling_down_past_the_master_switches_over_first() {
    let mut t = TestNs::new("scalemaster").await;
    t.start_operator();
    t.create_replication("cache", json!({"instances": 3})).await;
    let status = t.wait_ready("cache", 3, READY_TIMEOUT).await;
    let password = t.password("cache").await;
    if status.current_master.as_deref() != Some("cache-2") {
        request_switchover(&t, "cache", "cache-2").await;
        wait_switched_to(&t, "cache", "cache-2").await;
    }
    let keys = t.write_acknowledged(&t.pod_ip("cache-2").await, &password, "before", 200);

    t.patch_spec("cache", json!({"instances": 1})).await;
    let status = t.wait_ready("cache", 1, READY_TIMEOUT).await;
    assert_eq!(status.current_master.as_deref(), Some("cache-0"));
    wait_for("only cache-0 left", Duration::from_secs(60), || async {
        let pods = t.pod_names("cache").await;
        if pods.len() == 1 && pods.contains("cache-0") {
            Ok(())
        } else {
            Err(format!("{pods:?}"))
        }
    })
    .await;
    let record = status.last_failover.expect("lastFailover");
    assert_eq!(record.kind, FailoverKind::Switchover);
    assert!(
        record.reason.contains("scaling down"),
        "reason: {}",
        record.reason
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.type_ != "ScaleDownBlocked"),
        "{:?}",
        status.conditions
    );
    let ip = t.pod_ip("cache-0").await;
    assert_eq!(
        t.info_field(&ip, &password, "role").as_deref(),
        Some("master")
    );
    assert_all_present(&t, &ip, &password, &keys);
}

/// `chain`: each replica follows the previous one on the real processes; after the master
/// crashes, the chain is rebuilt from the new master and the old one rejoins it.
#[tokio::test(flavor = "multi_thread")]
async fn chain_topology_holds_before_and_after_a_failover() {
    let mut t = TestNs::new("chain").await;
    t.start_operator();
    t.create_replication(
        "cache",
        json!({"instances": 3, "topology": "Chain", "failover": {"downAfterMilliseconds": 1000}}),
    )
    .await;
    let status = t.wait_ready("cache", 3, READY_TIMEOUT).await;
    let password = t.password("cache").await;
    let before = wait_chain(&t, "cache", &password).await;
    let master_ip = t.pod_ip(&before[0]).await;
    let master_info = t.redis_cli(&master_ip, Some(&password), &["INFO", "replication"]);
    assert!(
        master_info.contains("connected_slaves:1"),
        "the master feeds one replica: {master_info}"
    );
    let keys = t.write_acknowledged(&master_ip, &password, "chain", 50);

    t.chaos(&before[0], Chaos::Crash);
    let status = t
        .wait_new_master("cache", &before[0], status.epoch, Duration::from_secs(60))
        .await;
    t.wait_ready("cache", 3, READY_TIMEOUT).await;
    let after = wait_chain(&t, "cache", &password).await;
    assert_eq!(Some(&after[0]), status.current_master.as_ref());
    assert!(
        after.contains(&before[0]),
        "the old master rejoined: {after:?}"
    );
    let tail = t.pod_ip(after.last().expect("tail")).await;
    wait_for(
        "acknowledged writes at the end of the chain",
        Duration::from_secs(30),
        || async {
            let present = t.redis_cli(&tail, Some(&password), &["EXISTS", &keys[0], &keys[49]]);
            if present == "2" { Ok(()) } else { Err(present) }
        },
    )
    .await;
    assert_all_present(&t, &tail, &password, &keys);
    eprintln!("chain: before the failover {before:?}, after {after:?}");
}

/// A `config` change Redis takes live is applied with `CONFIG SET`, pods untouched; one it
/// cannot (`databases`) goes through a rolling restart.
#[tokio::test(flavor = "multi_thread")]
async fn config_changes_apply_live_or_through_a_rolling_restart() {
    let mut t = TestNs::new("config").await;
    t.start_operator();
    t.create_replication(
        "cache",
        json!({"instances": 2, "config": {"maxmemory": "64mb"}}),
    )
    .await;
    t.wait_ready("cache", 2, READY_TIMEOUT).await;
    let password = t.password("cache").await;
    let uids = |pods: &[k8s_openapi::api::core::v1::Pod]| -> Vec<String> {
        pods.iter().filter_map(|p| p.uid()).collect()
    };
    let pods: Api<k8s_openapi::api::core::v1::Pod> = t.pods();
    let before = uids(&pods.list(&Default::default()).await.expect("pods").items);

    t.patch_spec("cache", json!({"config": {"maxmemory": "32mb"}}))
        .await;
    wait_for(
        "maxmemory 32mb live on every instance",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            for pod in &list {
                let ip = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .ok_or("no ip")?;
                let got = t.redis_cli(&ip, Some(&password), &["CONFIG", "GET", "maxmemory"]);
                let recorded = pod.annotations().get(CONFIG_ANNOTATION).cloned();
                if !got.ends_with("33554432")
                    || recorded.as_deref() != Some(r#"{"maxmemory":"32mb"}"#)
                {
                    return Err(format!(
                        "{}: {got:?}, recorded {recorded:?}",
                        pod.name_any()
                    ));
                }
            }
            Ok(())
        },
    )
    .await;
    let live = uids(&pods.list(&Default::default()).await.expect("pods").items);
    assert_eq!(before, live, "a live change replaces no pod");

    t.patch_spec("cache", json!({"config": {"databases": "32"}}))
        .await;
    wait_for(
        "databases 32 on every instance, through new pods",
        ROLL_TIMEOUT,
        || async {
            let list = pods
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let status = t.status("cache").await.ok_or("no status")?;
            let mut state = Vec::new();
            for pod in &list {
                let ip = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default();
                let got = t.redis_cli(&ip, Some(&password), &["CONFIG", "GET", "databases"]);
                if !got.ends_with("32") || before.contains(&pod.uid().unwrap_or_default()) {
                    state.push(format!("{}: {got:?}", pod.name_any()));
                }
            }
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if state.is_empty() && list.items.len() == 2 && ready && status.updated_instances == 2 {
                Ok(())
            } else {
                Err(format!("{state:?}, updated {}", status.updated_instances))
            }
        },
    )
    .await;
}
