//! The client matrix (issue 12): every Sentinel client applications use — redis-py, go-redis,
//! Jedis (`JedisSentinelPool`), Lettuce (a sentinel `RedisURI`, and `MasterReplica` with
//! sentinel), ioredis (defaults) and a Spring Boot application with Spring Data Redis — writes
//! through the operator's Sentinel endpoint while the master fails over and over: SIGKILL
//! crashes and `redis-cli SHUTDOWN`s, alternately, then a planned switchover. Every client must resume writing on each new master (none stuck), every
//! write acknowledged by the master and one replica (`WAIT 1`) must be on the final master, and
//! each client's resume times (fault to its first write on the new master) are printed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::day2::{request_switchover, wait_switched_to};
use crate::support::clients::{ClientProcess, Library};
use crate::support::{Chaos, TestNs, wait_for};

/// Master failures before the switchover.
const FAILOVERS: usize = 10;
/// A client that has not written on the new master this long after the fault is stuck.
const RESUME_BOUND: Duration = Duration::from_secs(30);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
const HEAL_TIMEOUT: Duration = Duration::from_secs(120);
/// Longer than the scenario: the writers are stopped when it ends.
const WRITE_SECONDS: u64 = 1200;

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL of the master's container.
    Crash,
    /// `redis-cli SHUTDOWN` of the master.
    Shutdown,
    /// A planned switchover to a replica (the request annotation).
    Switchover,
}

/// The time of the first write `writer` had acknowledged on `addr` at or after `since`.
fn first_write_on(writer: &ClientProcess, addr: &str, since: Instant) -> Option<Instant> {
    writer
        .lines()
        .into_iter()
        .find(|(at, line)| {
            *at >= since && line.starts_with("ok ") && line.ends_with(&format!(" {addr}"))
        })
        .map(|(at, _)| at)
}

/// The most frequent failure of a writer, its message cut short: how clients see a failover.
fn most_common_error(lines: &[(Instant, String)]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (_, line) in lines {
        // "err <i> <message>"
        if let Some(message) = line.strip_prefix("err ").and_then(|l| l.split_once(' ')) {
            let short: String = message.1.chars().take(60).collect();
            *counts.entry(short).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or_else(|| "none".into(), |(m, n)| format!("{n}x {m:?}"))
}

/// `(median, max)` of `times`.
fn summary(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sentinel_client_writes_through_repeated_failovers_and_a_switchover() {
    let mut t = TestNs::new("clients").await;
    t.start_operator();
    t.create_replication(
        "cache",
        json!({"instances": 3, "failover": {"downAfterMilliseconds": 1000}}),
    )
    .await;
    let mut status = t.wait_ready("cache", 3, HEAL_TIMEOUT).await;
    let password = t.password("cache").await;
    let port = t.sentinel_port();
    let name = format!("{}.cache", t.name);

    let writers: Vec<(Library, ClientProcess)> = Library::ALL
        .iter()
        .map(|&library| {
            let mut cmd = library.command(port, &name, &password, "write");
            cmd.args([
                "--duration",
                &library.duration(WRITE_SECONDS),
                "--wait",
                "1",
            ]);
            (library, ClientProcess::spawn(&t, library.name(), cmd))
        })
        .collect();
    let master = status.current_master.clone().expect("master");
    let addr = format!("{}:6379", t.pod_ip(&master).await);
    let started = Instant::now();
    for (library, writer) in &writers {
        wait_for(
            &format!("{} to write on the master", library.name()),
            FAILOVER_TIMEOUT,
            || {
                let found =
                    first_write_on(writer, &addr, started).ok_or_else(|| "not yet".to_string());
                async move { found }
            },
        )
        .await;
    }

    let faults = (0..FAILOVERS)
        .map(|i| {
            if i % 2 == 0 {
                Fault::Crash
            } else {
                Fault::Shutdown
            }
        })
        .chain([Fault::Switchover]);
    let mut resumes: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut failovers = Vec::new();
    for (n, fault) in faults.enumerate() {
        let old = status.current_master.clone().expect("master");
        let old_ip = t.pod_ip(&old).await;
        let at = Instant::now();
        match fault {
            Fault::Crash => t.chaos(&old, Chaos::Crash),
            // The connection closing is SHUTDOWN's answer.
            Fault::Shutdown => drop(t.redis_cli(&old_ip, Some(&password), &["SHUTDOWN"])),
            Fault::Switchover => {
                let target = status
                    .instances
                    .iter()
                    .map(|i| i.name.clone())
                    .find(|i| *i != old)
                    .expect("a replica");
                request_switchover(&t, "cache", &target).await;
                wait_switched_to(&t, "cache", &target).await;
            }
        }
        let next = t
            .wait_new_master("cache", &old, status.epoch, FAILOVER_TIMEOUT)
            .await;
        let promoted = at.elapsed();
        let new = next.current_master.clone().expect("master");
        let new_addr = format!("{}:6379", t.pod_ip(&new).await);
        for (library, writer) in &writers {
            let resumed = wait_for(
                &format!(
                    "{} to write on the new master {new} after fault {n} ({fault:?} of {old})",
                    library.name()
                ),
                RESUME_BOUND,
                || {
                    let found = first_write_on(writer, &new_addr, at).ok_or_else(|| {
                        let last: Vec<String> = writer
                            .lines()
                            .iter()
                            .rev()
                            .take(3)
                            .map(|(_, l)| l.clone())
                            .collect();
                        format!("stuck? last lines {last:?}")
                    });
                    async move { found }
                },
            )
            .await;
            resumes
                .entry(library.name())
                .or_default()
                .push(resumed.saturating_duration_since(at));
        }
        eprintln!(
            "clients: fault {n} at {:.3}s ({fault:?} of {old}): {new} promoted after {promoted:?}",
            at.duration_since(started).as_secs_f64()
        );
        failovers.push(promoted);
        // The next fault hits a whole set: the old master back as a replica.
        status = t.wait_ready("cache", 3, HEAL_TIMEOUT).await;
    }

    // Every write acknowledged by the master and a replica survived every failover.
    let final_ip = t
        .pod_ip(status.current_master.as_deref().expect("master"))
        .await;
    let mut report = Vec::new();
    for (library, writer) in writers {
        let lines = writer.lines();
        drop(writer);
        // Its stdout, for a look after a failure (stderr is in the artifacts already).
        let out = t
            .env
            .artifacts
            .join(format!("{}-{}.out", t.name, library.name()));
        let text: String = lines
            .iter()
            .map(|(at, l)| format!("{:.3} {l}\n", at.duration_since(started).as_secs_f64()))
            .collect();
        let _ = std::fs::write(out, text);
        let count = |verdict: &str| {
            lines
                .iter()
                .filter(|(_, l)| l.starts_with(&format!("{verdict} ")))
                .count()
        };
        let acked: Vec<String> = lines
            .iter()
            .filter_map(|(_, l)| {
                let mut parts = l.split(' ');
                (parts.next() == Some("ok")).then_some(())?;
                Some(format!("{}:{}", library.key_prefix(), parts.next()?))
            })
            .collect();
        t.assert_keys_present(&final_ip, &password, &acked);
        let (median, max) = summary(&resumes[library.name()]);
        report.push(format!(
            "  {:<10} resume median {median:>8.2?} max {max:>8.2?}; writes {} ok, {} unacked, {} \
             failed (most often: {}); 0 of the ok lost",
            library.name(),
            count("ok"),
            count("unacked"),
            count("err"),
            most_common_error(&lines),
        ));
    }
    let (median, max) = summary(&failovers);
    eprintln!(
        "clients: {FAILOVERS} failovers (crash, SHUTDOWN alternately) and a switchover; new master \
         recorded after median {median:.2?}, max {max:.2?}; resume time = fault to the client's \
         first acknowledged write on the new master:\n{}",
        report.join("\n")
    );
}
