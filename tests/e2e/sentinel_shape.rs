//! The Sentinel endpoint answers like a real Sentinel: the same requests go to two real
//! `redis-sentinel` processes watching the replication's own master and replicas, and to two
//! operator replicas (each announcing itself to the other); every reply must have the same shape
//! (types, field names and order, error and status texts), in RESP2 and RESP3, with and without
//! a password. Valkey's subcommand names go to the operator only (Redis 7.0 does not know them)
//! and must answer what Redis's names answer on the real Sentinel.

use std::process::{Child, Command};
use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::types::OwnedFrame as Frame2;
use redis_protocol::resp3::types::OwnedFrame as Frame3;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::clients::ClientProcess;
use crate::support::{OperatorOptions, TestNs, wait_for};

const SENTINEL_PASSWORD: &str = "sentinel-pw";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A reply with what a client relies on: types, field names, and the texts of status and
/// error replies; bulk values only by kind (integer or text), as they differ between servers.
#[derive(Clone, Debug, PartialEq)]
enum Shape {
    Status(String),
    Error(String),
    Int,
    Bulk(Kind),
    Null,
    Array(Vec<Shape>),
    Map(Vec<(String, Shape)>),
    Push(Vec<Shape>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Integer,
    Text,
}

fn kind(bytes: &[u8]) -> Kind {
    match std::str::from_utf8(bytes).map(str::parse::<i64>) {
        Ok(Ok(_)) => Kind::Integer,
        _ => Kind::Text,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Where RESP2 flattens field/value pairs into arrays (RESP3 has maps).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    Plain,
    /// The reply is one instance's fields.
    Fields,
    /// An array of instances' fields.
    EachFields,
}

fn shape2(frame: &Frame2, layout: Layout) -> Shape {
    match (frame, layout) {
        (Frame2::Array(items), Layout::Fields) => Shape::Map(
            items
                .chunks(2)
                .map(|pair| match pair {
                    [Frame2::BulkString(k), v] => (text(k), shape2(v, Layout::Plain)),
                    other => (format!("{other:?}"), Shape::Null),
                })
                .collect(),
        ),
        (Frame2::Array(items), Layout::EachFields) => Shape::Array(
            items
                .iter()
                .map(|item| shape2(item, Layout::Fields))
                .collect(),
        ),
        (Frame2::Array(items), Layout::Plain) => Shape::Array(
            items
                .iter()
                .map(|item| shape2(item, Layout::Plain))
                .collect(),
        ),
        (Frame2::SimpleString(s), _) => Shape::Status(text(s)),
        (Frame2::Error(e), _) => Shape::Error(e.to_string()),
        (Frame2::Integer(_), _) => Shape::Int,
        (Frame2::BulkString(b), _) => Shape::Bulk(kind(b)),
        (Frame2::Null, _) => Shape::Null,
    }
}

fn shape3(frame: &Frame3) -> Shape {
    match frame {
        Frame3::SimpleString { data, .. } => Shape::Status(text(data)),
        Frame3::SimpleError { data, .. } => Shape::Error(data.to_string()),
        Frame3::BlobError { data, .. } => Shape::Error(text(data)),
        Frame3::Number { .. } => Shape::Int,
        Frame3::BlobString { data, .. } => Shape::Bulk(kind(data)),
        Frame3::Null => Shape::Null,
        Frame3::Array { data, .. } => Shape::Array(data.iter().map(shape3).collect()),
        Frame3::Push { data, .. } => Shape::Push(data.iter().map(shape3).collect()),
        Frame3::Map { data, .. } => Shape::Map(
            data.iter()
                .map(|(k, v)| match k {
                    Frame3::BlobString { data, .. } | Frame3::SimpleString { data, .. } => {
                        (text(data), shape3(v))
                    }
                    other => (format!("{other:?}"), shape3(v)),
                })
                .collect(),
        ),
        other => Shape::Error(format!("unexpected frame {other:?}")),
    }
}

/// One client connection, decoding replies with the redis-protocol crate.
struct Conn {
    what: String,
    stream: TcpStream,
    buf: BytesMut,
    resp3: bool,
}

impl Conn {
    async fn open(what: &str, port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connecting to {what} on {port}: {e}"));
        Self {
            what: what.to_string(),
            stream,
            buf: BytesMut::new(),
            resp3: false,
        }
    }

    async fn send(&mut self, args: &[&str]) {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.stream
            .write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{}: sending {args:?}: {e}", self.what));
    }

    /// The next reply, as a shape.
    async fn reply(&mut self, layout: Layout) -> Shape {
        loop {
            // The decoders take an empty buffer for a bad frame.
            let decoded = if self.buf.is_empty() {
                Ok(None)
            } else if self.resp3 {
                redis_protocol::resp3::decode::complete::decode(&self.buf)
                    .map(|d| d.map(|(f, n)| (shape3(&f), n)))
            } else {
                redis_protocol::resp2::decode::decode(&self.buf)
                    .map(|d| d.map(|(f, n)| (shape2(&f, layout), n)))
            };
            match decoded {
                Ok(Some((shape, used))) => {
                    let _ = self.buf.split_to(used);
                    return shape;
                }
                Ok(None) => {}
                Err(e) => panic!("{}: undecodable reply {:?}: {e:?}", self.what, self.buf),
            }
            let mut chunk = [0; 4096];
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("{}: no reply in {REPLY_TIMEOUT:?}", self.what))
                .unwrap_or_else(|e| panic!("{}: reading: {e}", self.what));
            assert!(n > 0, "{}: closed the connection", self.what);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `args` and reads `replies` replies.
    async fn call(&mut self, args: &[&str], layout: Layout, replies: usize) -> Vec<Shape> {
        self.send(args).await;
        // HELLO answers in the protocol it asks for, unless it fails (the error reads the same).
        let before = self.resp3;
        if args[0].eq_ignore_ascii_case("hello") {
            self.resp3 = args.get(1).map_or(before, |v| *v == "3");
        }
        let mut shapes = Vec::new();
        for _ in 0..replies {
            shapes.push(self.reply(layout).await);
        }
        if matches!(shapes[..], [Shape::Error(_)]) {
            self.resp3 = before;
        }
        shapes
    }
}

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
}
