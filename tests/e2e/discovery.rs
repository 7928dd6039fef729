//! Sentinel-compatible discovery (DESIGN §6), checked with clients we did not write: redis-cli,
//! redis-py's `Sentinel` and go-redis's `NewFailoverClient` (tests/clients, installed by
//! tests/controlplane/tools.sh), through a master crash; and the endpoint's robustness against
//! malformed input.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::clients::{ClientProcess, Library};
use crate::support::{Chaos, OperatorOptions, TestNs, wait_for};

const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// A subscriber hears `+switch-master` at most this long after the test sees the new master
/// recorded.
const SWITCH_BOUND: Duration = Duration::from_secs(5);

/// redis-cli against the Sentinel endpoint; stdout, trimmed.
fn sentinel_cli(t: &TestNs, port: u16, args: &[&str]) -> String {
    let out = Command::new(&t.env.redis_cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A flat field/value reply as redis-cli prints it, one element per line.
fn fields(output: &str) -> BTreeMap<String, String> {
    let lines: Vec<&str> = output.lines().collect();
    lines
        .chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((k.to_string(), v.to_string())),
            _ => None,
        })
        .collect()
}

/// Writes raw bytes on a fresh connection, half-closes it, and reads until the server closes.
/// None if the server neither answered nor closed in time.
async fn raw_exchange(port: u16, input: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    // The server may close before reading everything (oversized input): that is an answer.
    let _ = stream.write_all(input).await;
    let _ = stream.shutdown().await;
    let mut reply = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await {
        Ok(_) => Some(reply),
        Err(_) => None,
    }
}

async fn ping_answers(port: u16) -> Result<(), String> {
    match raw_exchange(port, b"*1\r\n$4\r\nPING\r\n").await {
        Some(reply) if reply == b"+PONG\r\n" => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// redis-cli finds the master by `<namespace>.<name>`, unknown names get Sentinel's null reply,
/// `spec.sentinelMasterName` renames a master, and a name claimed twice is answered for neither
/// (and logged).
#[tokio::test(flavor = "multi_thread")]
async fn discovery_answers_redis_cli_from_the_replication_status() {
    let mut t = TestNs::new("disc-cli").await;
    let set = t.ready_replication("cache", 3).await;
    let port = t.sentinel_port();
    let name = format!("{}.cache", t.name);
    let expected = format!("{}\n6379", set.master_ip);
    wait_answer(&t, port, &name, &expected).await;

    // Unknown: the null array, exactly as Sentinel writes it.
    assert_eq!(
        sentinel_cli(
            &t,
            port,
            &["--no-raw", "SENTINEL", "get-master-addr-by-name", "nope"]
        ),
        "(nil)"
    );
    let raw = raw_exchange(
        port,
        b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$4\r\nnope\r\n",
    )
    .await;
    assert_eq!(raw.as_deref(), Some(&b"*-1\r\n"[..]));

    let master = fields(&sentinel_cli(&t, port, &["SENTINEL", "master", &name]));
    assert_eq!(master.get("ip"), Some(&set.master_ip), "{master:?}");
    assert_eq!(master.get("flags").map(String::as_str), Some("master"));
    assert_eq!(master.get("num-slaves").map(String::as_str), Some("2"));
    let replicas = sentinel_cli(&t, port, &["SENTINEL", "replicas", &name]);
    for addr in replica_addresses(&t, "cache", &set.master).await {
        assert!(replicas.contains(&addr), "{addr} in {replicas}");
    }
    let lines: Vec<&str> = replicas.lines().collect();
    let flags: Vec<&str> = lines
        .windows(2)
        .filter(|w| w[0] == "flags")
        .map(|w| w[1])
        .collect();
    assert_eq!(
        flags,
        ["slave", "slave"],
        "both replicas healthy: {replicas}"
    );

    // A name of one's own; when two replications claim it, neither is answered.
    t.create_replication(
        "other",
        json!({"instances": 1, "sentinelMasterName": "shared"}),
    )
    .await;
    let other = t.wait_ready("other", 1, Duration::from_secs(120)).await;
    let other_ip = t
        .pod_ip(other.current_master.as_deref().expect("master"))
        .await;
    wait_answer(&t, port, "shared", &format!("{other_ip}\n6379")).await;
    t.patch_spec("cache", json!({"sentinelMasterName": "shared"}))
        .await;
    wait_answer(&t, port, "shared", "").await;
    assert_eq!(
        master_addr(&t, port, &name),
        "",
        "the default name no longer applies"
    );
    let log = t.env.artifacts.join(format!("{}-operator.log", t.name));
    wait_for(
        "the collision in the log",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("claimed by several RedisReplications") {
                Ok(())
            } else {
                Err("not logged".to_string())
            }
        },
    )
    .await;
    t.patch_spec("cache", json!({"sentinelMasterName": null}))
        .await;
    wait_answer(&t, port, "shared", &format!("{other_ip}\n6379")).await;
    assert_eq!(master_addr(&t, port, &name), expected);

    // The schema refuses names a Sentinel message could not carry.
    let bad = t
        .replications()
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "apiVersion": "redis.vigil.dev/v1alpha1",
                "kind": "RedisReplication",
                "metadata": {"name": "bad"},
                "spec": {"instances": 1, "sentinelMasterName": "two words"},
            }))
            .expect("replication"),
        )
        .await;
    assert!(
        matches!(&bad, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("sentinelMasterName")),
        "{bad:?}"
    );
}

/// `SENTINEL get-master-addr-by-name` through redis-cli: host and port on two lines, or empty.
fn master_addr(t: &TestNs, port: u16, name: &str) -> String {
    sentinel_cli(t, port, &["SENTINEL", "get-master-addr-by-name", name])
}

/// Waits until redis-cli gets `want` for the master called `name`.
async fn wait_answer(t: &TestNs, port: u16, name: &str, want: &str) {
    wait_for(
        &format!("{name} to answer {want:?}"),
        Duration::from_secs(30),
        || async {
            let got = master_addr(t, port, name);
            if got == want { Ok(()) } else { Err(got) }
        },
    )
    .await;
}

/// `ip:6379` of every pod of `replication` but `master`.
async fn replica_addresses(t: &TestNs, replication: &str, master: &str) -> BTreeSet<String> {
    let mut addresses = BTreeSet::new();
    for pod in t.pod_names(replication).await {
        if pod != master {
            addresses.insert(format!("{}:6379", t.pod_ip(&pod).await));
        }
    }
    addresses
}

/// The master is killed while `library` writes through the Sentinel endpoint: the same client,
/// unchanged, writes to the new master afterwards; a redis-cli subscriber hears `+switch-master`
/// with the old and new addresses; the client then reads from a replica.
async fn a_client_follows_a_master_crash(prefix: &str, library: Library) {
    let mut t = TestNs::new(prefix).await;
    t.start_operator();
    t.create_replication(
        "cache",
        json!({"instances": 3, "failover": {"downAfterMilliseconds": 1000}}),
    )
    .await;
    let status = t.wait_ready("cache", 3, Duration::from_secs(120)).await;
    let old = status.current_master.clone().expect("master");
    let old_ip = t.pod_ip(&old).await;
    let password = t.password("cache").await;
    let port = t.sentinel_port();
    let name = format!("{}.cache", t.name);

    let mut subscribe = Command::new(&t.env.redis_cli);
    subscribe.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    subscribe.args(["SUBSCRIBE", "+switch-master"]);
    let subscriber = ClientProcess::spawn(&t, "subscriber", subscribe);
    subscriber
        .wait_lines("subscribed", Duration::from_secs(30), 1, |l| {
            l == "subscribe"
        })
        .await;

    let writer = ClientProcess::spawn(
        &t,
        "writer",
        library.command(port, &name, &password, "write"),
    );
    let old_addr = format!("{old_ip}:6379");
    let on = |addr: String| move |l: &str| l.starts_with("ok ") && l.ends_with(&format!(" {addr}"));
    writer
        .wait_lines(
            "writes on the master",
            FAILOVER_TIMEOUT,
            10,
            on(old_addr.clone()),
        )
        .await;

    let crash = Instant::now();
    t.chaos(&old, Chaos::Crash);
    let status = t
        .wait_new_master("cache", &old, status.epoch, FAILOVER_TIMEOUT)
        .await;
    let seen = crash.elapsed();
    let new = status.current_master.clone().expect("master");
    let new_ip = t.pod_ip(&new).await;
    let (heard, payload) = subscriber
        .wait_lines("+switch-master", SWITCH_BOUND, 1, |l| {
            l.starts_with(&format!("{name} "))
        })
        .await;
    assert_eq!(payload, format!("{name} {old_ip} 6379 {new_ip} 6379"));

    let new_addr = format!("{new_ip}:6379");
    writer
        .wait_lines(
            "writes on the new master",
            FAILOVER_TIMEOUT,
            20,
            on(new_addr.clone()),
        )
        .await;
    let lines = writer.lines();
    drop(writer);

    let oks: Vec<(Instant, &str, &str)> = lines
        .iter()
        .filter_map(|(at, l)| {
            let mut parts = l.split(' ');
            (parts.next() == Some("ok")).then_some(())?;
            Some((*at, parts.next()?, parts.next()?))
        })
        .collect();
    assert!(
        oks.iter()
            .all(|(_, _, addr)| *addr == old_addr || *addr == new_addr),
        "every write went to the master of its time: {lines:?}"
    );
    let last_old = oks
        .iter()
        .filter(|(_, _, a)| *a == old_addr)
        .map(|(at, _, _)| *at)
        .max()
        .expect("writes before");
    let first_new = oks
        .iter()
        .find(|(_, _, a)| *a == new_addr)
        .map(|(at, _, _)| *at)
        .expect("writes after");
    eprintln!(
        "{prefix}: crash -> new master seen in the status (polled) {seen:?}, -> +switch-master \
         heard {:?}, -> first write on the new master {:?}; writes: {} ok, {} failed; no write \
         for {:?}",
        heard.saturating_duration_since(crash),
        first_new.saturating_duration_since(crash),
        oks.len(),
        lines.iter().filter(|(_, l)| l.starts_with("err ")).count(),
        first_new.saturating_duration_since(last_old),
    );
    let after: Vec<String> = oks
        .iter()
        .filter(|(_, _, a)| *a == new_addr)
        .map(|(_, i, _)| format!("{}:{i}", library.key_prefix()))
        .collect();
    t.assert_keys_present(&new_ip, &password, &after);

    // Reads from a replica, once the replicas follow the new master again.
    t.wait_topology("cache", &new, &password, FAILOVER_TIMEOUT)
        .await;
    t.wait_ready("cache", 3, FAILOVER_TIMEOUT).await;
    let replicas = replica_addresses(&t, "cache", &new).await;
    let read = library
        .command(port, &name, &password, "read")
        .output()
        .expect("run the reader");
    let out = String::from_utf8_lossy(&read.stdout);
    assert!(
        read.status.success(),
        "reader: {out}{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let reads: Vec<&str> = out.lines().collect();
    assert!(!reads.is_empty());
    for line in reads {
        let parts: Vec<&str> = line.split(' ').collect();
        assert!(
            matches!(parts[..], ["read", addr, "slave"] if replicas.contains(addr)),
            "a read served by a replica ({replicas:?}): {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_lets_redis_py_follow_a_master_crash() {
    a_client_follows_a_master_crash("disc-py", Library::RedisPy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_lets_go_redis_follow_a_master_crash() {
    a_client_follows_a_master_crash("disc-go", Library::GoRedis).await;
}

/// Requests worth mutating: what Sentinel clients send.
const VALID: &[&[u8]] = &[
    b"*1\r\n$4\r\nPING\r\n",
    b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$5\r\nmymst\r\n",
    b"*2\r\n$8\r\nSENTINEL\r\n$7\r\nmasters\r\n",
    b"*2\r\n$9\r\nSUBSCRIBE\r\n$14\r\n+switch-master\r\n",
    b"*2\r\n$10\r\nPSUBSCRIBE\r\n$1\r\n*\r\n",
    b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n",
    b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$3\r\napp\r\n",
    b"*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$2\r\npw\r\n",
];

/// Random, mutated, truncated, nested and oversized frames from a seeded generator.
fn fuzz_input(rng: &mut StdRng) -> Vec<u8> {
    let valid = VALID[rng.random_range(0..VALID.len())].to_vec();
    match rng.random_range(0..9) {
        0 => (0..rng.random_range(0..512))
            .map(|_| rng.random())
            .collect(),
        1 => {
            let mut input = valid;
            for _ in 0..rng.random_range(1..5) {
                let at = rng.random_range(0..input.len());
                match rng.random_range(0..3) {
                    0 => input[at] = rng.random(),
                    1 => input.insert(at, rng.random()),
                    _ => {
                        input.remove(at);
                    }
                }
                if input.is_empty() {
                    break;
                }
            }
            input
        }
        2 => valid[..rng.random_range(0..valid.len())].to_vec(),
        3 => b"*1\r\n".repeat(rng.random_range(10..30_000)),
        4 => format!("*1\r\n${}\r\nabc", rng.random::<u64>()).into_bytes(),
        5 => {
            let len = rng.random_range(60_000..80_000);
            let mut input = format!("*1\r\n${len}\r\n").into_bytes();
            input.resize(input.len() + len, b'x');
            input
        }
        6 => {
            let n = rng.random_range(60..300);
            let mut input = format!("*{n}\r\n").into_bytes();
            for _ in 0..n {
                input.extend_from_slice(b"$1\r\na\r\n");
            }
            input
        }
        7 => {
            let odd: &[&[u8]] = &[
                b"*-5\r\n",
                b"$-1\r\n",
                b"*1\r\n$-2\r\n",
                b"%1\r\n$1\r\na\r\n$1\r\nb\r\n",
                b">1\r\n$1\r\na\r\n",
                b"_\r\n",
                b"PING\r\n",
                b"*1\r\n$3\r\nab\r\n",
                b"*2\r\n$4\r\nPING\r\n",
                b"*1\r\n:1\r\n",
            ];
            odd[rng.random_range(0..odd.len())].to_vec()
        }
        // A header line that never ends.
        _ => {
            let mut input = b"*1\r\n$".to_vec();
            input.resize(rng.random_range(100..90_000), b'9');
            input
        }
    }
}

/// A few thousand hostile inputs, each on its own connection: every one is answered or closed
/// promptly, the operator keeps running, and a fresh client still gets PONG.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_survives_malformed_truncated_and_oversized_input() {
    const INPUTS: usize = 3000;
    let t = TestNs::new("disc-fuzz").await;
    let mut operator = t.spawn_operator(OperatorOptions::default());
    let port = operator.sentinel_port;
    wait_for("the Sentinel endpoint", Duration::from_secs(30), || {
        ping_answers(port)
    })
    .await;

    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(0x5e17_1e1f);
    let inputs: Vec<Vec<u8>> = (0..INPUTS).map(|_| fuzz_input(&mut rng)).collect();
    let outcomes: Vec<Option<Vec<u8>>> = futures::stream::iter(inputs.iter())
        .map(|input| raw_exchange(port, input))
        .buffer_unordered(16)
        .collect()
        .await;
    let hung = outcomes.iter().filter(|o| o.is_none()).count();
    let errors = outcomes
        .iter()
        .flatten()
        .filter(|r| r.windows(15).any(|w| w == b"Protocol error:"))
        .count();
    eprintln!(
        "fuzz: {INPUTS} inputs in {:?}: {errors} protocol errors, {} other replies, {} closed \
         silently, {hung} hung",
        start.elapsed(),
        outcomes.iter().flatten().filter(|r| !r.is_empty()).count() - errors,
        outcomes.iter().flatten().filter(|r| r.is_empty()).count(),
    );
    assert_eq!(hung, 0, "every input is answered or closed");
    assert!(
        errors > INPUTS / 10,
        "the bad inputs were refused: {errors}"
    );
    assert!(start.elapsed() < Duration::from_secs(120), "bounded time");
    assert!(!operator.has_exited(), "the operator survived");
    ping_answers(port).await.expect("PONG from a fresh client");
}
