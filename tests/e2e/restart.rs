//! A restarted master never wipes its replicas. The story of the Redis replication tutorial:
//! write k1 and k2 on the master, stop it (`SHUTDOWN`, or a crash), let it come back, write k3:
//! every instance then holds k1, k2 and k3 — with failover on or off, with or without storage,
//! with persistence off, star or chain. And a role change closes the clients of the instance
//! whose role changed, so none is left writing to a replica.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::day2::{request_switchover, wait_switched_to};
use crate::support::{Chaos, OperatorOptions, TestNs, wait_for};

const TIMEOUT: Duration = Duration::from_secs(120);
const KEYS: [(&str, &str); 3] = [("k1", "v1"), ("k2", "v2"), ("k3", "v3")];

#[derive(Clone, Copy, Debug)]
enum Stop {
    /// `redis-cli SHUTDOWN`, as the tutorial does: Redis saves (when persistence is on) and exits.
    Shutdown,
    /// SIGKILL: nothing is saved since the last snapshot.
    Crash,
}

/// The restart count of the pod's container.
async fn restarts(t: &TestNs, pod: &str) -> i32 {
    t.pods()
        .get(pod)
        .await
        .ok()
        .and_then(|p| {
            p.status?
                .container_statuses?
                .first()
                .map(|c| c.restart_count)
        })
        .unwrap_or(0)
}

/// Runs the story on a set of 3 made from `spec` and asserts every key on every instance.
async fn tutorial(prefix: &str, spec: Value, stop: Stop) {
    let mut t = TestNs::new(prefix).await;
    t.start_operator();
    t.create_replication("cache", spec.clone()).await;
    let before = t.wait_ready("cache", 3, TIMEOUT).await;
    let master = before.current_master.clone().expect("master");
    let ip = t.pod_ip(&master).await;
    let password = t.password("cache").await;
    for (key, value) in &KEYS[..2] {
        assert_eq!(
            t.redis_cli(&ip, Some(&password), &["SET", key, value]),
            "OK"
        );
    }
    // The tutorial's premise: both replicas hold k1 and k2 when the master stops.
    wait_keys_everywhere(&t, &password, &KEYS[..2], "before the stop").await;
    let restarted = restarts(&t, &master).await;
    match stop {
        // The connection closing is SHUTDOWN's answer.
        Stop::Shutdown => drop(t.redis_cli(&ip, Some(&password), &["SHUTDOWN"])),
        Stop::Crash => t.chaos(&master, Chaos::Crash),
    }
    let failover = spec["failover"]["enabled"].as_bool().unwrap_or(true);
    let status = wait_for(
        &format!("{master} restarted ({stop:?}) and the set settled with 3 instances"),
        TIMEOUT,
        || async {
            let again = restarts(&t, &master).await > restarted;
            let status = t.status("cache").await.ok_or("no status")?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let home = failover || status.current_master.as_deref() == Some(master.as_str());
            if again
                && ready
                && status.ready_instances == 3
                && home
                && status.hand_back_to.is_none()
                // The intent of the hand-back names the master before FAILOVER completes.
                && status.target_master.is_none()
            {
                Ok(status)
            } else {
                Err(format!("restarted: {again}; {status:?}"))
            }
        },
    )
    .await;
    let now = status.current_master.clone().expect("master");
    if !failover {
        assert_eq!(now, master, "failover is off: the same pod is master again");
    }
    let now_ip = t.pod_ip(&now).await;
    let (k3, v3) = KEYS[2];
    assert_eq!(
        t.redis_cli(&now_ip, Some(&password), &["SET", k3, v3]),
        "OK"
    );
    let what = format!("after the restart ({stop:?}, spec {spec})");
    wait_keys_everywhere(&t, &password, &KEYS, &what).await;
    let reasons = t.event_reasons("cache").await;
    assert!(
        !reasons.iter().any(|r| r == "ReplicaDataDiscarded"),
        "nothing discarded: {reasons:?}"
    );
}

/// Every instance holds every key with its value (replication is asynchronous, and in a chain
/// the master's `WAIT` only counts its own replica: so polled, bounded).
async fn wait_keys_everywhere(t: &TestNs, password: &str, keys: &[(&str, &str)], what: &str) {
    wait_for(
        &format!("every key on every instance {what}"),
        TIMEOUT,
        || async {
            let mut missing = Vec::new();
            for pod in t.pod_names("cache").await {
                let ip = t.pod_ip(&pod).await;
                for (key, value) in keys {
                    let got = t.redis_cli(&ip, Some(password), &["GET", key]);
                    if got != *value {
                        missing.push(format!("{pod} {key}={got:?}"));
                    }
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing.join(", "))
            }
        },
    )
    .await;
}

fn no_failover(extra: Value) -> Value {
    let mut spec =
        json!({"instances": 3, "failover": {"enabled": false, "downAfterMilliseconds": 1000}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

/// Default persistence (RDB on the pod's emptyDir): SHUTDOWN saves, the master returns with
/// all its data and is master again.
#[tokio::test(flavor = "multi_thread")]
async fn tutorial_shutdown_without_failover_keeps_every_key() {
    tutorial("tut-shutdown", no_failover(json!({})), Stop::Shutdown).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tutorial_shutdown_with_storage_keeps_every_key() {
    let spec = no_failover(json!({"storage": {"size": "1Gi"}}));
    tutorial("tut-storage", spec, Stop::Shutdown).await;
}

/// Persistence off: the master returns empty and is refilled from a replica before it takes
/// the master role back.
#[tokio::test(flavor = "multi_thread")]
async fn tutorial_shutdown_with_persistence_off_refills_the_master() {
    let spec = no_failover(json!({"persistence": "None"}));
    tutorial("tut-nopersist", spec, Stop::Shutdown).await;
}

/// A crash saves nothing: the master returns with less than its replicas and is refilled.
#[tokio::test(flavor = "multi_thread")]
async fn tutorial_crash_without_failover_refills_the_master() {
    tutorial("tut-crash", no_failover(json!({})), Stop::Crash).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tutorial_crash_in_a_chain_without_failover_refills_the_master() {
    let spec = no_failover(json!({"topology": "Chain"}));
    tutorial("tut-chain", spec, Stop::Crash).await;
}

/// With failover the replica with the most data is promoted.
#[tokio::test(flavor = "multi_thread")]
async fn tutorial_crash_with_failover_keeps_every_key() {
    let spec = json!({"instances": 3, "failover": {"downAfterMilliseconds": 1000}});
    tutorial("tut-failover", spec, Stop::Crash).await;
}

/// A client holding a connection to an instance whose role changes is disconnected, so it
/// re-resolves the master: here a fenced, restarted master that the operator (stopped while it
/// came back) then refills and makes master again, and a master demoted by a switchover.
#[tokio::test(flavor = "multi_thread")]
async fn a_role_change_closes_the_clients_of_the_instance() {
    let mut t = TestNs::new("kill-clients").await;
    t.start_operator();
    t.create_replication("cache", no_failover(json!({"persistence": "None"})))
        .await;
    let ready = t.wait_ready("cache", 3, TIMEOUT).await;
    let master = ready.current_master.clone().expect("master");
    let password = t.password("cache").await;
    let restarted = restarts(&t, &master).await;
    t.stop_operator();
    t.chaos(&master, Chaos::Crash);
    wait_for(&format!("{master} back, fenced"), TIMEOUT, || async {
        if restarts(&t, &master).await <= restarted {
            return Err("not restarted yet".to_string());
        }
        let ip = t.pod_ip(&master).await;
        match t.info_field(&ip, &password, "master_port").as_deref() {
            Some("1") => Ok(()),
            other => Err(format!("master_port {other:?}")),
        }
    })
    .await;
    let ip = t.pod_ip(&master).await;
    let fenced_client = connected_client(&ip, &password);
    t.start_operator();
    wait_for("the fenced instance's role change", TIMEOUT, || async {
        match t.info_field(&ip, &password, "master_port").as_deref() {
            Some("1") => Err("still fenced".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    assert_closed(fenced_client, "fenced -> replica");

    // Master again after its refill; a switchover then demotes it.
    wait_for("the hand-back", TIMEOUT, || async {
        let s = t.status("cache").await.ok_or("no status")?;
        let home = s.current_master.as_deref() == Some(master.as_str());
        let settled = s.hand_back_to.is_none() && s.target_master.is_none();
        if home && settled && s.ready_instances == 3 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    let master_client = connected_client(&ip, &password);
    let target = t
        .pod_names("cache")
        .await
        .into_iter()
        .find(|p| *p != master)
        .expect("a replica");
    request_switchover(&t, "cache", &target).await;
    wait_switched_to(&t, "cache", &target).await;
    assert_closed(master_client, "master -> replica (switchover)");
}

/// The operator dies after recording a switchover's intent, before `FAILOVER`: the old master
/// keeps taking writes meanwhile. The next operator finishes the switchover with `FAILOVER TO`
/// at the recorded epoch, so those writes reach the new master too.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_switchover_is_finished_without_losing_writes() {
    let mut t = TestNs::new("resume-switch").await;
    t.start_operator();
    t.create_replication("cache", json!({"instances": 3})).await;
    let ready = t.wait_ready("cache", 3, TIMEOUT).await;
    let master = ready.current_master.clone().expect("master");
    let master_ip = t.pod_ip(&master).await;
    let password = t.password("cache").await;
    let before = t.write_acknowledged(&master_ip, &password, "before", 50);
    t.stop_operator();
    let mut doomed = t.spawn_operator(OperatorOptions {
        crash_at: Some("after-intent"),
        tag: Some("doomed"),
        ..OperatorOptions::default()
    });
    let target = t
        .pod_names("cache")
        .await
        .into_iter()
        .find(|p| *p != master)
        .expect("a replica");
    request_switchover(&t, "cache", &target).await;
    wait_for("the operator to die after the intent", TIMEOUT, || {
        let exited = doomed.has_exited();
        async move {
            if exited {
                Ok(())
            } else {
                Err("running".to_string())
            }
        }
    })
    .await;
    let mid = t.status("cache").await.expect("status");
    assert_eq!(
        mid.target_master.as_deref(),
        Some(target.as_str()),
        "{mid:?}"
    );
    // Still the master: it acknowledges writes the target must not lose.
    let during = t.write_acknowledged(&master_ip, &password, "during", 50);
    t.start_operator();
    let done = wait_switched_to(&t, "cache", &target).await;
    assert_eq!(done.epoch, mid.epoch, "finished at the recorded epoch");
    let target_ip = t.pod_ip(&target).await;
    t.assert_keys_present(&target_ip, &password, &before);
    t.assert_keys_present(&target_ip, &password, &during);
    assert_eq!(
        done.last_failover.map(|r| r.kind),
        Some(vigil::api::FailoverKind::Switchover)
    );
}

/// A plain TCP client, authenticated, with a read timeout.
fn connected_client(ip: &str, password: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect((ip, 6379)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len());
    stream.write_all(auth.as_bytes()).expect("AUTH");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("AUTH answer");
    assert_eq!(line, "+OK\r\n");
    reader
}

/// The server closed the connection (EOF or reset) by the time the role change is visible: it
/// is part of the same transaction, so no probe interval is allowed for it here.
fn assert_closed(mut client: BufReader<TcpStream>, change: &str) {
    let started = Instant::now();
    let _ = client.get_mut().write_all(b"*1\r\n$4\r\nPING\r\n");
    let mut line = String::new();
    match client.read_line(&mut line) {
        Ok(0) | Err(_) => {}
        Ok(_) => panic!(
            "{change}: the client is still connected (answered {line:?} after {:?})",
            started.elapsed()
        ),
    }
}
