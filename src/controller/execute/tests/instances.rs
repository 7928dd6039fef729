//! Stand-in Redis instances for the executor's tests: each listens on a local port, answers what
//! the executor sends as a real instance would (roles, `MULTI`/`EXEC`, `INFO replication`), and
//! writes every command it receives to the test's timeline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;

use super::{Fakes, Timeline};
use crate::discovery::resp::{Proto, Reply, RequestDecoder, RequestLimits};
use crate::redis::{Address, ReplicationInfo};

/// What one stand-in is: its role and replication history, as `INFO replication` shows them.
#[derive(Clone, Debug, PartialEq)]
pub struct Fake {
    /// The upstream it follows; `None`: a master.
    pub following: Option<Address>,
    pub offset: i64,
    pub replid: String,
    /// The history it was promoted from, and the offset the promotion started at.
    pub previous: Option<(String, i64)>,
}

impl Fake {
    pub fn master(replid: &str, offset: i64) -> Self {
        Self {
            following: None,
            offset,
            replid: replid.into(),
            previous: None,
        }
    }

    pub fn replica(of: &Address, replid: &str, offset: i64) -> Self {
        Self {
            following: Some(of.clone()),
            ..Self::master(replid, offset)
        }
    }

    /// What the monitor would have observed of it: the plan is made from that.
    pub fn observed(&self) -> Option<ReplicationInfo> {
        Some(ReplicationInfo::parse(&info(self)).expect("INFO replication parses"))
    }

    /// Made a master: a new history starts where the old one ends, as in Redis.
    fn promoted(&mut self, pod: &str) {
        if self.following.take().is_some() {
            let old = std::mem::replace(&mut self.replid, format!("{pod}-history"));
            self.previous = Some((old, self.offset + 1));
        }
    }
}

/// The stand-ins of one test, by pod name.
pub struct Instances {
    state: Arc<Mutex<HashMap<String, Fake>>>,
    /// Pod address -> where its stand-in listens: the dialling seam of `Context`.
    pub redirects: HashMap<Address, Address>,
}

impl Instances {
    /// Starts one stand-in per (pod, pod address, initial state).
    pub async fn start(timeline: &Timeline, instances: Fakes) -> Self {
        let state = Arc::new(Mutex::new(HashMap::new()));
        let mut redirects = HashMap::new();
        for (pod, address, fake) in instances {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let local = listener.local_addr().expect("local address");
            redirects.insert(address, Address::new("127.0.0.1", local.port()));
            state.lock().expect("state").insert(pod.to_string(), fake);
            let (state, timeline, pod) = (state.clone(), timeline.clone(), pod.to_string());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, pod.clone(), state.clone(), timeline.clone()));
                }
            });
        }
        Self { state, redirects }
    }

    /// What `pod` is now.
    pub fn fake(&self, pod: &str) -> Fake {
        self.state.lock().expect("state")[pod].clone()
    }
}

async fn serve(
    stream: TcpStream,
    pod: String,
    state: Arc<Mutex<HashMap<String, Fake>>>,
    timeline: Timeline,
) {
    let (read, mut write) = stream.into_split();
    let limits = RequestLimits {
        max_bytes: 64 * 1024,
        max_args: 64,
    };
    let mut requests = FramedRead::new(read, RequestDecoder::new(limits));
    // Commands queued by `MULTI`, run by `EXEC`.
    let mut queued: Option<Vec<Vec<String>>> = None;
    let mut buf = BytesMut::new();
    while let Some(Ok(request)) = requests.next().await {
        let words: Vec<String> = request
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let reply = {
            let mut state = state.lock().expect("state");
            answer(&pod, &words, &mut queued, &mut state, &timeline)
        };
        buf.clear();
        reply.encode(Proto::Resp2, &mut buf);
        if write.write_all(&buf).await.is_err() {
            return;
        }
    }
}

fn answer(
    pod: &str,
    words: &[String],
    queued: &mut Option<Vec<Vec<String>>>,
    state: &mut HashMap<String, Fake>,
    timeline: &Timeline,
) -> Reply {
    let upper = uppercase(words);
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    // The client library's own connection setup is no step of the executor's.
    if let ["CLIENT", "SETINFO" | "SETNAME", ..] = upper.as_slice() {
        return Reply::ok();
    }
    timeline.record(format!("{pod}: {}", words.join(" ")));
    match (upper.as_slice(), queued.as_mut()) {
        (["MULTI"], None) => {
            *queued = Some(Vec::new());
            Reply::ok()
        }
        (["EXEC"], Some(_)) => {
            let commands = queued.take().unwrap_or_default();
            Reply::Array(commands.iter().map(|c| run(pod, c, state)).collect())
        }
        (_, Some(commands)) => {
            commands.push(words.to_vec());
            Reply::Simple("QUEUED".into())
        }
        _ => run(pod, words, state),
    }
}

/// One command, as Redis would carry it out.
fn run(pod: &str, words: &[String], state: &mut HashMap<String, Fake>) -> Reply {
    let upper = uppercase(words);
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    match upper.as_slice() {
        ["REPLICAOF", "NO", "ONE"] => {
            fake(state, pod).promoted(pod);
            Reply::ok()
        }
        ["REPLICAOF", _, _] => match address(&words[1], &words[2]) {
            Some(of) => {
                fake(state, pod).following = Some(of);
                Reply::ok()
            }
            None => Reply::error("ERR Invalid master port"),
        },
        ["CLIENT", "KILL", ..] => Reply::Int(0),
        ["CONFIG", "SET", "MASTERAUTH", _] => Reply::ok(),
        ["INFO", "REPLICATION"] => Reply::bulk(info(fake(state, pod))),
        _ => Reply::error(format!("ERR unknown command '{}'", words.join(" "))),
    }
}

fn fake<'a>(state: &'a mut HashMap<String, Fake>, pod: &str) -> &'a mut Fake {
    state.get_mut(pod).expect("a stand-in of every pod")
}

/// Command words are case-insensitive.
fn uppercase(words: &[String]) -> Vec<String> {
    words.iter().map(|w| w.to_uppercase()).collect()
}

fn address(host: &str, port: &str) -> Option<Address> {
    Some(Address::new(host, port.parse().ok()?))
}

/// `INFO replication` as Redis 7 writes it, with what the parser reads.
fn info(fake: &Fake) -> String {
    let (replid2, second) = match &fake.previous {
        Some((id, offset)) => (id.as_str(), *offset),
        None => (NO_HISTORY, -1),
    };
    let history = format!(
        "master_replid:{}\r\nmaster_replid2:{replid2}\r\nmaster_repl_offset:{}\r\n\
         second_repl_offset:{second}\r\n",
        fake.replid, fake.offset
    );
    match &fake.following {
        None => format!("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n{history}"),
        Some(of) => format!(
            "# Replication\r\nrole:slave\r\nmaster_host:{}\r\nmaster_port:{}\r\n\
             master_link_status:up\r\nmaster_sync_in_progress:0\r\n{history}",
            of.host, of.port
        ),
    }
}

const NO_HISTORY: &str = "0000000000000000000000000000000000000000";
