//! The Sentinel endpoint answers like a real Sentinel: the same requests go to two real
//! `redis-sentinel` processes watching the replication's own master and replicas, and to two
//! operator replicas (each announcing itself to the other); every reply must have the same shape
//! (types, field names and order, error and status texts), in RESP2 and RESP3, with and without
//! a password. Valkey's subcommand names go to the operator only (Redis 7.0 does not know them)
//! and must answer what Redis's names answer on the real Sentinel.

use std::process::{Child, Command};
use std::time::Duration;

use crate::resp_shape::{Conn, Layout, Shape};
use crate::support::clients::ClientProcess;
use crate::support::{OperatorOptions, TestNs, wait_for};

const SENTINEL_PASSWORD: &str = "sentinel-pw";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A request: what the operator is sent, what the real Sentinel is sent (Valkey's names are
/// Redis's there), the layout, and how many replies it gets.
struct Step<'a> {
    vigil: Vec<&'a str>,
    real: Vec<&'a str>,
    layout: Layout,
    replies: usize,
}

fn step<'a>(args: &[&'a str], layout: Layout) -> Step<'a> {
    Step {
        vigil: args.to_vec(),
        real: args.to_vec(),
        layout,
        replies: 1,
    }
}

/// Runs `steps` on both connections and asserts every pair of replies has the same shape.
async fn compare(vigil: &mut Conn, real: &mut Conn, steps: &[Step<'_>]) {
    let fields = |shapes: &[Shape]| -> usize {
        shapes
            .iter()
            .map(|s| match s {
                Shape::Map(pairs) => pairs.len(),
                Shape::Array(items) => items
                    .iter()
                    .map(|i| if let Shape::Map(p) = i { p.len() } else { 0 })
                    .sum(),
                _ => 0,
            })
            .sum()
    };
    let mut compared = (0, 0);
    for s in steps {
        let ours = vigil.call(&s.vigil, s.layout, s.replies).await;
        let theirs = real.call(&s.real, s.layout, s.replies).await;
        assert_eq!(
            ours,
            theirs,
            "{:?} (RESP{}): vigil's reply differs from redis-sentinel's {:?}",
            s.vigil,
            if vigil.resp3 { 3 } else { 2 },
            s.real
        );
        compared = (compared.0 + ours.len(), compared.1 + fields(&ours));
    }
    eprintln!(
        "shape: {} replies ({} fields) of {} alike in RESP{}",
        compared.0,
        compared.1,
        vigil.what,
        if vigil.resp3 { 3 } else { 2 }
    );
}

/// A `redis-sentinel` process, killed when dropped.
struct RealSentinel {
    child: Child,
    port: u16,
}

impl Drop for RealSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a Sentinel monitoring `name` at `master_ip:6379` with quorum 1. Both real Sentinels
/// authenticate to their peers with the Sentinel password (a Sentinel without one ignores it).
fn real_sentinel(
    t: &TestNs,
    tag: &str,
    name: &str,
    master_ip: &str,
    password: &str,
    requirepass: bool,
) -> RealSentinel {
    let port = free_port();
    let dir = &t.env.artifacts;
    let conf = dir.join(format!("{}-{tag}.conf", t.name));
    let mut text = format!(
        "port {port}\nbind 127.0.0.1\nsentinel announce-ip 127.0.0.1\ndir {}\nlogfile {}\n\
         sentinel monitor {name} {master_ip} 6379 1\nsentinel auth-pass {name} {password}\n\
         sentinel down-after-milliseconds {name} 5000\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n",
        dir.display(),
        dir.join(format!("{}-{tag}.log", t.name)).display(),
    );
    if requirepass {
        text.push_str(&format!("requirepass {SENTINEL_PASSWORD}\n"));
    }
    std::fs::write(&conf, text).expect("sentinel config");
    let child = Command::new("redis-sentinel")
        .arg(&conf)
        .spawn()
        .expect("start redis-sentinel");
    RealSentinel { child, port }
}

/// redis-cli's answer from a Sentinel endpoint, one element per line.
fn cli(t: &TestNs, port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new(&t.env.redis_cli);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--no-auth-warning",
    ]);
    if let Some(pw) = password {
        cmd.args(["-a", pw]);
    }
    let out = cmd.args(args).output().expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the endpoint on `port` sees two replicas that are both healthy and one peer
/// Sentinel: the steady state in which the two sides are compared.
async fn wait_steady(t: &TestNs, what: &str, port: u16, password: Option<&str>, name: &str) {
    wait_for(
        &format!("{what} to see 2 healthy replicas and 1 peer"),
        READY_TIMEOUT,
        || async {
            let replicas = cli(t, port, password, &["SENTINEL", "replicas", name]);
            let sentinels = cli(t, port, password, &["SENTINEL", "sentinels", name]);
            let flags = |s: &str| -> Vec<String> {
                let lines: Vec<&str> = s.lines().collect();
                lines
                    .windows(2)
                    .filter(|w| w[0] == "flags")
                    .map(|w| w[1].to_string())
                    .collect()
            };
            let linked = replicas.matches("master-link-status\nok\n").count();
            if flags(&replicas) == ["slave", "slave"]
                && linked == 2
                && flags(&sentinels) == ["sentinel"]
            {
                Ok(())
            } else {
                Err(format!("replicas: {replicas:?}; sentinels: {sentinels:?}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_replies_have_the_shapes_of_a_real_sentinel() {
    let mut t = TestNs::new("disc-shape").await;
    let set = t.ready_replication("cache", 3).await;
    let name = format!("{}.cache", t.name);
    let password_file = t
        .env
        .artifacts
        .join(format!("{}-sentinel-password", t.name));
    std::fs::write(&password_file, SENTINEL_PASSWORD).expect("password file");
    // The first replica hears of the second as Sentinel announces a new Sentinel.
    let mut subscribe = Command::new(&t.env.redis_cli);
    subscribe.args(["-h", "127.0.0.1", "-p", &t.sentinel_port().to_string()]);
    subscribe.args(["SUBSCRIBE", "+sentinel"]);
    let subscriber = ClientProcess::spawn(&t, "sentinel-subscriber", subscribe);
    subscriber
        .wait_lines("subscribed", READY_TIMEOUT, 1, |l| l == "subscribe")
        .await;
    let peer = t.spawn_operator(OperatorOptions {
        tag: Some("peer"),
        args: vec![
            "--sentinel-only=true".into(),
            format!("--sentinel-password-file={}", password_file.display()),
        ],
        ..OperatorOptions::default()
    });
    let open = real_sentinel(
        &t,
        "sentinel-open",
        &name,
        &set.master_ip,
        &set.password,
        false,
    );
    let locked = real_sentinel(
        &t,
        "sentinel-locked",
        &name,
        &set.master_ip,
        &set.password,
        true,
    );
    let pw = Some(SENTINEL_PASSWORD);
    wait_steady(&t, "redis-sentinel", open.port, None, &name).await;
    wait_steady(&t, "redis-sentinel (password)", locked.port, pw, &name).await;
    wait_steady(&t, "vigil", t.sentinel_port(), None, &name).await;
    wait_steady(&t, "vigil (password)", peer.sentinel_port, pw, &name).await;

    let (_, heard) = subscriber
        .wait_lines("+sentinel for the new replica", READY_TIMEOUT, 1, |l| {
            l.starts_with("sentinel ")
        })
        .await;
    assert!(
        heard.contains(&format!(" 127.0.0.1 {} @ {name} ", peer.sentinel_port)),
        "{heard}"
    );
    drop(subscriber);

    let n = name.as_str();
    let queries = |resp3: bool| {
        let mut steps = vec![
            step(&["PING"], Layout::Plain),
            step(&["PING", "hello"], Layout::Plain),
            step(&["SENTINEL", "myid"], Layout::Plain),
            step(&["ROLE"], Layout::Plain),
            step(&["SENTINEL", "get-master-addr-by-name", n], Layout::Plain),
            step(
                &["SENTINEL", "get-master-addr-by-name", "nope"],
                Layout::Plain,
            ),
            step(&["SENTINEL", "master", n], Layout::Fields),
            step(&["SENTINEL", "master", "nope"], Layout::Plain),
            step(&["SENTINEL", "masters"], Layout::EachFields),
            step(&["SENTINEL", "replicas", n], Layout::EachFields),
            step(&["SENTINEL", "slaves", n], Layout::EachFields),
            step(&["SENTINEL", "sentinels", n], Layout::EachFields),
            step(&["SENTINEL", "ckquorum", n], Layout::Plain),
            step(&["SENTINEL", "get-master-addr-by-name"], Layout::Plain),
            step(&["CLIENT", "SETNAME", "shape-test"], Layout::Plain),
            step(&["CLIENT", "GETNAME"], Layout::Plain),
            step(&["GET", "x"], Layout::Plain),
        ];
        // Valkey's names on the operator, Redis's on the real Sentinel.
        for (valkey, redis, args, layout) in [
            (
                "get-primary-addr-by-name",
                "get-master-addr-by-name",
                Some(n),
                Layout::Plain,
            ),
            ("primary", "master", Some(n), Layout::Fields),
            ("primaries", "masters", None, Layout::EachFields),
        ] {
            let mut vigil = vec!["SENTINEL", valkey];
            let mut real = vec!["SENTINEL", redis];
            vigil.extend(args);
            real.extend(args);
            steps.push(Step {
                vigil,
                real,
                layout,
                replies: 1,
            });
        }
        // Subscribed, then back.
        let mut subscribed = vec![
            Step {
                replies: 2,
                ..step(&["SUBSCRIBE", "+switch-master", "+sdown"], Layout::Plain)
            },
            step(&["PSUBSCRIBE", "*"], Layout::Plain),
            step(&["PING"], Layout::Plain),
            Step {
                replies: 2,
                ..step(&["UNSUBSCRIBE"], Layout::Plain)
            },
            step(&["PUNSUBSCRIBE"], Layout::Plain),
        ];
        if !resp3 {
            // RESP2 allows only pub/sub commands while subscribed.
            subscribed.insert(3, step(&["SENTINEL", "masters"], Layout::Plain));
        }
        steps.extend(subscribed);
        steps
    };

    let mut vigil = Conn::open("vigil", t.sentinel_port()).await;
    let mut real = Conn::open("redis-sentinel", open.port).await;
    compare(&mut vigil, &mut real, &queries(false)).await;
    compare(
        &mut vigil,
        &mut real,
        &[
            step(&["AUTH", "x"], Layout::Plain),
            step(&["HELLO", "3"], Layout::Plain),
        ],
    )
    .await;
    assert!(vigil.resp3 && real.resp3, "both speak RESP3 now");
    compare(&mut vigil, &mut real, &queries(true)).await;

    // With a password: nothing but AUTH and HELLO ... AUTH before authenticating, PING neither.
    let mut vigil = Conn::open("vigil (password)", peer.sentinel_port).await;
    let mut real = Conn::open("redis-sentinel (password)", locked.port).await;
    compare(
        &mut vigil,
        &mut real,
        &[
            step(&["PING"], Layout::Plain),
            step(&["HELLO", "3"], Layout::Plain),
            step(&["SENTINEL", "masters"], Layout::Plain),
            step(&["SUBSCRIBE", "+switch-master"], Layout::Plain),
            step(&["AUTH", "wrong"], Layout::Plain),
            step(&["AUTH", "someone", SENTINEL_PASSWORD], Layout::Plain),
            step(&["AUTH", SENTINEL_PASSWORD], Layout::Plain),
        ],
    )
    .await;
    compare(&mut vigil, &mut real, &queries(false)).await;
    let mut vigil = Conn::open("vigil (password)", peer.sentinel_port).await;
    let mut real = Conn::open("redis-sentinel (password)", locked.port).await;
    compare(
        &mut vigil,
        &mut real,
        &[step(
            &["HELLO", "3", "AUTH", "default", SENTINEL_PASSWORD],
            Layout::Plain,
        )],
    )
    .await;
    compare(&mut vigil, &mut real, &queries(true)).await;

    // Each operator replica lists the other, never itself.
    let listed = |port, password| {
        let out = cli(&t, port, password, &["SENTINEL", "sentinels", n]);
        let lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines
            .windows(2)
            .find(|w| w[0] == "port")
            .map(|w| w[1].clone())
    };
    assert_eq!(
        listed(t.sentinel_port(), None),
        Some(peer.sentinel_port.to_string())
    );
    assert_eq!(
        listed(peer.sentinel_port, pw),
        Some(t.sentinel_port().to_string())
    );

    // A replica that stops (SIGTERM) withdraws its announcement: the other stops listing it at
    // once, not when its Lease would expire (30 s).
    let mut peer = peer;
    peer.terminate();
    wait_for(
        "the stopped replica to leave SENTINEL SENTINELS",
        Duration::from_secs(15),
        || async {
            match listed(t.sentinel_port(), None) {
                None => Ok(()),
                Some(port) => Err(format!("still lists {port}")),
            }
        },
    )
    .await;
}
