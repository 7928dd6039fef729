//! `kubectl vigil fence | unfence` against a real set: a fenced replica refuses writes, follows
//! no instance of the set and leaves the replicas Service; unfenced, it is linked again. A
//! fenced master leaves the set without writes and no failover replaces it; unfenced, it is
//! master again. `--all` empties both Services. The error cases: a bad name, a missing pod;
//! asking twice changes nothing and succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::api::ListParams;
use vigil::api::{Phase, RedisReplicationStatus};

use crate::plugin::{instance_row, not_found, plugin, refused, stderr, stdout};
use crate::support::{ReadySet, TestNs, wait_for};

/// Runs a verb that must succeed; returns its stdout and stderr (printed for the log).
pub(crate) fn succeeds(t: &TestNs, args: &[&str]) -> (String, String) {
    let started = Instant::now();
    let out = plugin(t, args);
    let (so, se) = (stdout(&out), stderr(&out));
    println!(
        "kubectl vigil {} ({:?}):\n{so}{se}",
        args.join(" "),
        started.elapsed()
    );
    assert!(out.status.success(), "{args:?} failed: {so}{se}");
    (so, se)
}

/// The instance at `ip` refuses a write and follows no instance of the set (`ips`).
fn assert_fenced(t: &TestNs, pod: &str, ip: &str, password: &str, ips: &BTreeSet<String>) {
    let write = t.redis_cli(ip, Some(password), &["SET", "fence:probe", "x"]);
    assert!(write.contains("READONLY"), "{pod} took a write: {write}");
    let role = t.redis_cli(ip, Some(password), &["ROLE"]);
    let lines: Vec<&str> = role.lines().map(str::trim).collect();
    assert_eq!(lines.first(), Some(&"slave"), "{pod} ROLE: {role}");
    let upstream = lines.get(1).copied().unwrap_or_default();
    assert!(
        !ips.contains(upstream),
        "{pod} follows {upstream}, an instance of the set"
    );
    assert_eq!(
        t.info_field(ip, password, "master_link_status").as_deref(),
        Some("down"),
        "{pod} is linked to nothing"
    );
}

/// The pods of `cache` and their addresses.
async fn addresses(t: &TestNs) -> BTreeMap<String, String> {
    let mut ips = BTreeMap::new();
    for pod in t.pod_names("cache").await {
        let ip = t.pod_ip(&pod).await;
        ips.insert(pod, ip);
    }
    ips
}

fn others(ips: &BTreeMap<String, String>, but: &[&str]) -> BTreeSet<String> {
    ips.iter()
        .filter(|(pod, _)| !but.contains(&pod.as_str()))
        .map(|(_, ip)| ip.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_fence_and_unfence_a_replica_the_master_and_all() {
    let mut t = TestNs::new("plugin-fence").await;
    let ReadySet {
        master,
        master_ip,
        password,
        ..
    } = t.ready_replication("cache", 3).await;
    let ips = addresses(&t).await;
    let every: BTreeSet<String> = ips.values().cloned().collect();
    let replica = ips
        .keys()
        .find(|p| **p != master)
        .cloned()
        .expect("a replica");
    let replica_ip = ips[&replica].clone();

    // The error cases.
    not_found(
        &t,
        &[
            &["fence", "nosuchname", "cache-1"],
            &["unfence", "nosuchname", "--all"],
        ],
    );
    let message = refused(&t, &["fence", "cache", "nosuchpod"]);
    assert!(
        message.contains("pod \"nosuchpod\" is not an instance of redisreplication \"cache\""),
        "{message}"
    );

    // A replica: read-only, following nobody, out of the replicas Service.
    let (out, err) = succeeds(&t, &["fence", "cache", &replica, "--timeout", "90s"]);
    assert!(
        out.contains(&format!("fencing {replica} requested")),
        "{out}"
    );
    assert!(
        err.contains(&format!(
            "{replica} fenced (role fenced, out of the Services)"
        )),
        "{err}"
    );
    assert_fenced(&t, &replica, &replica_ip, &password, &every);
    t.wait_endpoints("cache-replicas", others(&ips, &[&master, &replica]))
        .await;
    let now = t.status("cache").await.expect("status");
    assert_eq!(
        now.fenced_instances,
        std::slice::from_ref(&replica),
        "{now:?}"
    );
    let (text, _) = succeeds(&t, &["status", "cache"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("Fenced:") && l.contains(&replica)),
        "{text}"
    );
    assert_eq!(
        instance_row(&text, &replica).get(1),
        Some(&"fenced"),
        "{text}"
    );
    // Asking again changes nothing and succeeds.
    let (out, _) = succeeds(&t, &["fence", "cache", &replica]);
    assert!(
        out.contains(&format!("{replica} is already fenced")),
        "{out}"
    );

    // Unfenced: linked to the master again, back in the Service, replicating new writes.
    let (_, err) = succeeds(&t, &["unfence", "cache", &replica, "--timeout", "90s"]);
    assert!(
        err.contains(&format!("unfenced: {replica} a ready, linked replica")),
        "{err}"
    );
    assert_eq!(
        t.info_field(&replica_ip, &password, "master_host")
            .as_deref(),
        Some(master_ip.as_str())
    );
    t.wait_endpoints("cache-replicas", others(&ips, &[&master]))
        .await;
    let keys = t.write_acknowledged(&master_ip, &password, "unfenced", 5);
    wait_for(
        "the writes on the unfenced replica",
        Duration::from_secs(20),
        || async {
            let n = t.redis_cli(&replica_ip, Some(&password), &["EXISTS", &keys[4]]);
            if n == "1" { Ok(()) } else { Err(n) }
        },
    )
    .await;
    let (out, _) = succeeds(&t, &["unfence", "cache", &replica]);
    assert!(out.contains(&format!("{replica} is not fenced")), "{out}");

    // The master: the set takes no writes and no failover replaces it.
    succeeds(&t, &["fence", "cache", &master, "--timeout", "90s"]);
    assert_fenced(&t, &master, &master_ip, &password, &every);
    t.wait_endpoints("cache-master", BTreeSet::new()).await;
    let epoch = t.status("cache").await.expect("status").epoch;
    hold_without_master(&t, &master, &password, &ips, epoch).await;
    let (_, err) = succeeds(&t, &["unfence", "cache", &master, "--timeout", "90s"]);
    assert!(err.contains(&format!("{master} master again")), "{err}");
    assert_eq!(
        t.redis_cli(&master_ip, Some(&password), &["SET", "after", "unfence"]),
        "OK"
    );
    t.assert_keys_present(&master_ip, &password, &keys);
    t.wait_endpoints("cache-master", BTreeSet::from([master_ip.clone()]))
        .await;
    let now = t.status("cache").await.expect("status");
    assert_eq!(now.current_master.as_deref(), Some(master.as_str()));
    assert_eq!(now.phase, Some(Phase::Ready), "{now:?}");

    // Every instance, then none: both Services empty, then as before.
    let (_, err) = succeeds(&t, &["fence", "cache", "--all", "--timeout", "90s"]);
    assert!(
        err.contains("fenced (role fenced, out of the Services)"),
        "{err}"
    );
    for (pod, ip) in &ips {
        assert_fenced(&t, pod, ip, &password, &every);
    }
    t.wait_endpoints("cache-master", BTreeSet::new()).await;
    t.wait_endpoints("cache-replicas", BTreeSet::new()).await;
    succeeds(&t, &["unfence", "cache", "--all", "--timeout", "90s"]);
    t.wait_endpoints("cache-master", BTreeSet::from([master_ip.clone()]))
        .await;
    t.wait_endpoints("cache-replicas", others(&ips, &[&master]))
        .await;
    t.wait_topology("cache", &master, &password, Duration::from_secs(30))
        .await;
    let now: RedisReplicationStatus = t.status("cache").await.expect("status");
    assert!(now.fenced_instances.is_empty(), "{now:?}");
}

/// For longer than the failure detection takes (downAfter 5 s), with the master fenced: the
/// phase says Fenced, the master and epoch stay, and no instance takes the master role or label.
async fn hold_without_master(
    t: &TestNs,
    master: &str,
    password: &str,
    ips: &BTreeMap<String, String>,
    epoch: i64,
) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let now = t.status("cache").await.expect("status");
        assert_eq!(now.current_master.as_deref(), Some(master), "{now:?}");
        assert_eq!(
            now.epoch, epoch,
            "no promotion while the master is fenced: {now:?}"
        );
        assert_eq!(now.phase, Some(Phase::Fenced), "{now:?}");
        for (pod, ip) in ips {
            let role = t.info_field(ip, password, "role");
            assert_ne!(
                role.as_deref(),
                Some("master"),
                "{pod} writable while fenced"
            );
        }
        let labelled = t
            .pods()
            .list(&ListParams::default().labels("redis.vigil.dev/role=master"))
            .await
            .expect("list pods");
        assert!(labelled.items.is_empty(), "a pod carries the master label");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
