//! `kubectl vigil` (the built `kubectl-vigil` binary, as a user runs it with a kubeconfig)
//! against real sets: `status` of a ready set and of a set mid-failover, `switchover --wait`,
//! `report`'s bundle, and the error cases (a bad name, a missing pod, a request in progress).

use std::io::Read;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use vigil::api::RedisReplicationStatus;
use vigil::labels::SWITCHOVER_ANNOTATION;

use crate::support::{Chaos, ReadySet, TestNs, wait_for};

/// Runs `kubectl-vigil ARGS` in the test's namespace with the admin kubeconfig.
pub(crate) fn plugin(t: &TestNs, args: &[&str]) -> Output {
    let admin = t.env.admin_kubeconfig.to_string_lossy().to_string();
    Command::new(env!("CARGO_BIN_EXE_kubectl-vigil"))
        .args(["--kubeconfig", &admin, "-n", &t.name])
        .args(args)
        .output()
        .expect("run kubectl-vigil")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Runs a verb that must fail, and returns its message.
pub(crate) fn refused(t: &TestNs, args: &[&str]) -> String {
    let out = plugin(t, args);
    assert!(
        !out.status.success(),
        "{args:?} must fail; it printed {}{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

/// Each verb fails naming the replication that does not exist and the namespace.
pub(crate) fn not_found(t: &TestNs, verbs: &[&[&str]]) {
    for verb in verbs {
        let message = refused(t, verb);
        assert!(
            message.contains(&format!(
                "redisreplication \"nosuchname\" not found in namespace \"{}\"",
                t.name
            )),
            "{verb:?}: {message}"
        );
    }
}

/// The `Master:` line of the text status.
fn master_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("Master:"))
        .unwrap_or_default()
}

/// The row of `pod` in the Instances table, split in columns.
pub(crate) fn instance_row<'a>(text: &'a str, pod: &str) -> Vec<&'a str> {
    text.lines()
        .map(str::split_whitespace)
        .map(Iterator::collect::<Vec<_>>)
        .find(|cols| cols.first() == Some(&pod))
        .unwrap_or_default()
}

/// Status, switchover and report on one ready set, with every error case on the way.
#[tokio::test(flavor = "multi_thread")]
async fn plugin_status_switchover_and_report_on_a_ready_set() {
    let mut t = TestNs::new("plugin").await;
    let ReadySet {
        master, password, ..
    } = t.ready_replication("cache", 3).await;

    // status: the summary names the phase, the master and every instance's role.
    let out = plugin(&t, &["status", "cache"]);
    assert!(out.status.success(), "status: {}", stderr(&out));
    let text = stdout(&out);
    println!("kubectl vigil status cache:\n{text}");
    assert!(
        text.contains(&format!("Replication:    {}/cache", t.name)),
        "{text}"
    );
    assert!(text.contains("Phase:          Ready"), "{text}");
    assert!(master_line(&text).contains(&master), "{text}");
    for pod in t.pod_names("cache").await {
        let row = instance_row(&text, &pod);
        let role = if pod == master { "master" } else { "replica" };
        assert_eq!(row.get(1..3), Some(&[role, "yes"][..]), "{pod}: {text}");
        if pod != master {
            assert_eq!(row.last(), Some(&"up"), "{pod} linked: {text}");
        }
    }
    // -o json and -o yaml are the status itself.
    for format in ["json", "yaml"] {
        let out = plugin(&t, &["status", "cache", "-o", format]);
        assert!(out.status.success(), "status -o {format}: {}", stderr(&out));
        let status: RedisReplicationStatus = match format {
            "json" => serde_json::from_slice(&out.stdout).expect("status JSON"),
            _ => serde_yaml::from_slice(&out.stdout).expect("status YAML"),
        };
        assert_eq!(status.current_master.as_deref(), Some(master.as_str()));
        assert_eq!(status.instances.len(), 3, "{status:?}");
    }

    // The error cases: a bad name, a missing pod, the master itself, a request in progress.
    not_found(
        &t,
        &[
            &["status", "nosuchname"],
            &["switchover", "nosuchname"],
            &["report", "nosuchname", "-o", "/dev/null"],
        ],
    );
    let message = refused(&t, &["switchover", "cache", "--to", "nosuchpod"]);
    assert!(
        message.contains("pod \"nosuchpod\" is not an instance of redisreplication \"cache\""),
        "{message}"
    );
    let message = refused(&t, &["switchover", "cache", "--to", &master]);
    assert!(message.contains("already the master"), "{message}");
    // A request already on the replication (the operator stopped, so it stays pending).
    t.stop_operator();
    let annotate = |value: serde_json::Value| {
        let patch = json!({"metadata": {"annotations": {SWITCHOVER_ANNOTATION: value}}});
        let api = t.replications();
        async move {
            api.patch("cache", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("annotate");
        }
    };
    annotate(json!(master)).await;
    let message = refused(&t, &["switchover", "cache"]);
    assert!(
        message.contains(&format!(
            "a switchover of cache to {master} is already requested"
        )),
        "{message}"
    );
    annotate(serde_json::Value::Null).await;
    t.start_operator();

    // switchover --wait: the best synced replica becomes master, progress on stderr.
    let status = t.wait_ready("cache", 3, Duration::from_secs(60)).await;
    let started = Instant::now();
    let out = plugin(&t, &["switchover", "cache", "--wait", "--timeout", "90s"]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "switchover --wait: {}{}",
        stdout(&out),
        stderr(&out)
    );
    println!(
        "kubectl vigil switchover cache --wait ({took:?}):\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    let target = stdout(&out)
        .split_whitespace()
        .skip_while(|w| *w != "to")
        .nth(1)
        .map(str::to_string)
        .expect("the target in the output");
    assert_ne!(target, master);
    // (Which replica is best is the unit tests' business: offsets move between two reads.)
    assert!(
        status.instances.iter().any(|i| i.name == target),
        "{target} is an instance: {status:?}"
    );
    assert!(
        stderr(&out).contains(&format!("{target} is the master")),
        "{}",
        stderr(&out)
    );
    let now = t.status("cache").await.expect("status");
    assert_eq!(now.current_master.as_deref(), Some(target.as_str()));
    assert!(now.epoch > status.epoch, "{now:?}");
    let text = stdout(&plugin(&t, &["status", "cache"]));
    assert!(master_line(&text).contains(&target), "{text}");
    assert!(text.contains(&format!("From: {master}")), "{text}");
    assert!(text.contains("Switchover"), "{text}");

    // report: a tar.gz of the objects and logs, the Secret's keys without its values.
    let path = t.env.artifacts.join(format!("{}-report.tar.gz", t.name));
    let out = plugin(&t, &["report", "cache", "-o", &path.to_string_lossy()]);
    assert!(out.status.success(), "report: {}", stderr(&out));
    let files = untar(&std::fs::read(&path).expect("the bundle"));
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    println!("kubectl vigil report cache: {names:?}");
    let file = |suffix: &str| {
        files
            .iter()
            .find(|(n, _)| n.ends_with(suffix))
            .map(|(_, text)| text.as_str())
            .unwrap_or_else(|| panic!("{suffix} in the bundle: {names:?}"))
    };
    assert!(file("/redisreplication.yaml").contains("RedisReplication"));
    assert!(file("/status.txt").contains(&target));
    // The operator's Events of this switchover, among the namespace's.
    assert!(file("/events.yaml").contains("FailoverCompleted"));
    for pod in t.pod_names("cache").await {
        assert!(file(&format!("/pods/{pod}.yaml")).contains(&pod));
        file(&format!("/logs/{pod}/redis.log"));
    }
    for suffix in [
        "/services/cache-master.yaml",
        "/configmaps/cache-config.yaml",
        "/poddisruptionbudgets/cache.yaml",
    ] {
        file(suffix);
    }
    let secret = file("/secrets/cache-auth.yaml");
    assert!(
        secret.contains("password: REDACTED"),
        "the key is kept, its value redacted:\n{secret}"
    );
    let encoded = serde_json::to_value(ByteString(password.clone().into_bytes()))
        .expect("base64")
        .as_str()
        .map(str::to_string)
        .expect("a string");
    for (name, text) in &files {
        assert!(
            !text.contains(&password) && !text.contains(&encoded),
            "the password is in {name}"
        );
    }
}

/// `status` while the master has crashed and right after the failover: it shows the set
/// failing over (or degraded while the old master restarts) and names the new master.
#[tokio::test(flavor = "multi_thread")]
async fn plugin_status_of_a_set_mid_failover_names_the_new_master() {
    let mut t = TestNs::new("plugin-failover").await;
    let ReadySet { master, status, .. } = t.ready_replication("cache", 3).await;
    t.chaos(&master, Chaos::Crash);
    let mut seen = Vec::new();
    let new_master = wait_for(
        "kubectl vigil status to name a new master",
        Duration::from_secs(60),
        || {
            let out = plugin(&t, &["status", "cache"]);
            let text = stdout(&out);
            let ok = out.status.success();
            seen.push(text.clone());
            let master = master.clone();
            let old_epoch = status.epoch;
            let t = &t;
            async move {
                if !ok {
                    return Err("status failed".to_string());
                }
                let now = t.status("cache").await.ok_or("no status")?;
                match now.current_master {
                    // Settled: the intent names the new master before it is promoted.
                    Some(m)
                        if m != master && now.epoch > old_epoch && now.target_master.is_none() =>
                    {
                        // The status written with a failover lists the roles observed
                        // before it; the next one lists the new master's.
                        let listed = instance_row(&text, &m).get(1) == Some(&"master");
                        if master_line(&text).contains(&m)
                            && !text.contains("Changing to:")
                            && listed
                        {
                            Ok(m)
                        } else {
                            Err(format!("the status names {m}, the output:\n{text}"))
                        }
                    }
                    _ => Err(format!("still {:?}", now.current_master)),
                }
            }
        },
    )
    .await;
    let last = seen.last().cloned().unwrap_or_default();
    println!(
        "kubectl vigil status cache, {} runs, the last after the failover:\n{last}",
        seen.len()
    );
    // Some run saw the set not Ready: the failover in progress, or the old master not yet back.
    let unsettled = |text: &String| {
        !text.contains("Phase:          Ready")
            || text.contains("Changing to:")
            || instance_row(text, &master).get(2) == Some(&"no")
    };
    assert!(
        seen.iter().any(unsettled),
        "no run of status saw the failover: {seen:#?}"
    );
    let row = instance_row(&last, &new_master);
    assert_eq!(row.get(1), Some(&"master"), "{last}");
    assert!(last.contains(&format!("From: {master}")), "{last}");
    assert!(last.contains("Kind: Failover"), "{last}");
    // Once settled, the old master is listed as a replica of the new one.
    t.wait_ready("cache", 3, Duration::from_secs(90)).await;
    let text = stdout(&plugin(&t, &["status", "cache"]));
    assert_eq!(
        instance_row(&text, &master).get(1..3),
        Some(&["replica", "yes"][..]),
        "{text}"
    );
}

/// The files of a .tar.gz and their text.
fn untar(bytes: &[u8]) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut files = Vec::new();
    for entry in archive.entries().expect("a tar.gz") {
        let mut entry = entry.expect("an entry");
        let name = entry.path().expect("a path").display().to_string();
        let mut raw = Vec::new();
        entry.read_to_end(&mut raw).expect("read the entry");
        files.push((name, String::from_utf8_lossy(&raw).to_string()));
    }
    files
}
