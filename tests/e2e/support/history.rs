//! The history a linearizability checker needs: several client tasks on the node, each asking
//! the operator's Sentinel endpoint for the master before every operation (as a Sentinel client
//! does after any error) and doing writes (`SET k v` + `WAIT quorum`) and confirmed reads
//! (`GET k`, then a write of the client's scratch key + `WAIT quorum`) on a few keys, with call
//! and return times. The history goes to a JSON-lines file in the artifacts and Porcupine
//! (tests/clients/linearizability, installed by tools.sh) judges it; what each outcome means,
//! and so what property is checked, is written at the top of that program.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

use super::TestNs;
use super::clients::clients_dir;

/// Few keys, so that reads and writes of one key overlap across clients.
const KEYS: [&str; 3] = ["lin:a", "lin:b", "lin:c"];
const CLIENTS: usize = 4;
/// Pause between one client's operations: with four clients, about 200 operations a second.
const OP_EVERY: Duration = Duration::from_millis(15);
const OP_TIMEOUT: Duration = Duration::from_millis(300);
/// `WAIT`'s own timeout (ms): well below [`OP_TIMEOUT`], so a WAIT that counts too few
/// replicas answers rather than timing out.
const WAIT_MS: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

/// One operation a client did.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub write: bool,
    pub key: &'static str,
    /// Written, or read (empty: the key was absent).
    pub value: String,
    pub call: Duration,
    pub ret: Duration,
    pub outcome: Outcome,
    /// A read whose `GET` was answered, confirmed or not.
    pub served: bool,
}

impl Op {
    fn json(&self) -> String {
        serde_json::json!({
            "client": self.client,
            "op": if self.write { "write" } else { "read" },
            "key": self.key,
            "value": self.value,
            "call": self.call.as_nanos() as u64,
            "return": self.ret.as_nanos() as u64,
            "outcome": match self.outcome {
                Outcome::Ok => "ok",
                Outcome::Fail => "fail",
                Outcome::Unknown => "unknown",
            },
            "served": self.served,
        })
        .to_string()
    }
}

/// The clients, recording until stopped.
pub struct Recorder {
    tasks: Vec<JoinHandle<Vec<Op>>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// What the operations' times count from.
    started: Instant,
}

/// Where the clients find the master and what they need to write.
#[derive(Clone)]
pub struct Target {
    /// Ports of Sentinel endpoints on 127.0.0.1, asked in order until one answers.
    pub sentinels: Vec<u16>,
    /// The master's name there (`<namespace>.<name>`).
    pub master_name: String,
    pub password: String,
    /// Replicas that must have a write for it to count (the master's quorum).
    pub acks: u32,
}

impl Recorder {
    pub fn start(target: Target) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let tasks = (0..CLIENTS)
            .map(|client| {
                let target = target.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let mut c = Client {
                        id: client,
                        target,
                        start: started,
                        sentinels: HashMap::new(),
                        instances: HashMap::new(),
                    };
                    c.run(stopped).await
                })
            })
            .collect();
        Self {
            tasks,
            stop,
            started,
        }
    }

    /// Stops the clients; when they started, and their operations by call time.
    pub async fn stop(self) -> (Instant, Vec<Op>) {
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("history client"));
        }
        all.sort_by_key(|op| op.call);
        (self.started, all)
    }
}

fn config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(OP_TIMEOUT))
        .set_response_timeout(Some(OP_TIMEOUT))
}

/// Whether an error leaves the connection unusable (it is dropped and made again).
fn broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped()
}

struct Client {
    id: usize,
    target: Target,
    start: Instant,
    sentinels: HashMap<u16, MultiplexedConnection>,
    instances: HashMap<String, MultiplexedConnection>,
}

impl Client {
    async fn run(&mut self, stopped: tokio::sync::watch::Receiver<bool>) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut n = 0u64;
        while !*stopped.borrow() {
            tokio::time::sleep(OP_EVERY).await;
            n += 1;
            let key = KEYS[rand::random_range(0..KEYS.len())];
            let write = rand::random_bool(0.5);
            let call = self.start.elapsed();
            let (value, outcome, served) = if write {
                let value = format!("c{}-{n}", self.id);
                let outcome = self.write(key, &value).await;
                (value, outcome, false)
            } else {
                self.read(key).await
            };
            ops.push(Op {
                client: self.id,
                write,
                key,
                value,
                call,
                ret: self.start.elapsed(),
                outcome,
                served,
            });
        }
        ops
    }

    /// The master's address as the first Sentinel endpoint that answers names it.
    async fn master(&mut self) -> Option<String> {
        for port in self.target.sentinels.clone() {
            let conn = match self.sentinels.entry(port) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(v) => {
                    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    else {
                        continue;
                    };
                    match client
                        .get_multiplexed_async_connection_with_config(&config())
                        .await
                    {
                        Ok(c) => v.insert(c),
                        Err(_) => continue,
                    }
                }
            };
            let answer: redis::RedisResult<Option<(String, String)>> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.target.master_name)
                .query_async(conn)
                .await;
            match answer {
                Ok(Some((ip, port))) => return Some(format!("{ip}:{port}")),
                Ok(None) => {}
                Err(e) => {
                    if broken(&e) {
                        self.sentinels.remove(&port);
                    }
                }
            }
        }
        None
    }

    /// A connection to the master, or `None` when none could be made (nothing was sent).
    async fn connection(&mut self) -> Option<(String, MultiplexedConnection)> {
        let addr = self.master().await?;
        if let Some(conn) = self.instances.get(&addr) {
            return Some((addr, conn.clone()));
        }
        let url = format!("redis://:{}@{addr}", self.target.password);
        let conn = redis::Client::open(url)
            .ok()?
            .get_multiplexed_async_connection_with_config(&config())
            .await
            .ok()?;
        self.instances.insert(addr.clone(), conn.clone());
        Some((addr, conn))
    }

    /// Runs `cmd` on the connection to `addr`, dropping the connection when it broke.
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        addr: &str,
        conn: &mut MultiplexedConnection,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let result = cmd.query_async(conn).await;
        if let Err(e) = &result
            && broken(e)
        {
            self.instances.remove(addr);
        }
        result
    }

    /// Whether the replicas of the quorum have everything this connection wrote.
    async fn quorum_has_it(&mut self, addr: &str, conn: &mut MultiplexedConnection) -> bool {
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.target.acks).arg(WAIT_MS);
        matches!(self.query::<i64>(addr, conn, &wait).await,
            Ok(n) if n >= i64::from(self.target.acks))
    }

    async fn write(&mut self, key: &str, value: &str) -> Outcome {
        let Some((addr, mut conn)) = self.connection().await else {
            return Outcome::Fail;
        };
        let mut set = redis::cmd("SET");
        set.arg(key).arg(value);
        match self.query::<String>(&addr, &mut conn, &set).await {
            Ok(_) => {}
            // Refused (READONLY, NOREPLICAS ...): it did not happen.
            Err(e) if !broken(&e) => return Outcome::Fail,
            // Sent, perhaps executed: no answer.
            Err(_) => return Outcome::Unknown,
        }
        if self.quorum_has_it(&addr, &mut conn).await {
            Outcome::Ok
        } else {
            Outcome::Unknown
        }
    }

    /// A `GET` counts only if the instance then takes a write and its quorum acknowledges it:
    /// it was a writable master whose replicas hold all the GET saw.
    async fn read(&mut self, key: &str) -> (String, Outcome, bool) {
        let Some((addr, mut conn)) = self.connection().await else {
            return (String::new(), Outcome::Fail, false);
        };
        let mut get = redis::cmd("GET");
        get.arg(key);
        let value = match self.query::<Option<String>>(&addr, &mut conn, &get).await {
            Ok(v) => v.unwrap_or_default(),
            Err(_) => return (String::new(), Outcome::Fail, false),
        };
        let mut scratch = redis::cmd("SET");
        scratch.arg(format!("lin:scratch:{}", self.id)).arg(key);
        let confirmed = self
            .query::<String>(&addr, &mut conn, &scratch)
            .await
            .is_ok()
            && self.quorum_has_it(&addr, &mut conn).await;
        let outcome = if confirmed {
            Outcome::Ok
        } else {
            Outcome::Fail
        };
        (value, outcome, true)
    }
}

/// What the checker said about a history.
pub struct Verdict {
    pub linearizable: bool,
    /// The same history with every answered `GET` counted as a read, confirmed or not (`None`:
    /// undecided within its timeout). Only reported: a bare GET on a master is not
    /// linearizable in Redis.
    pub with_unconfirmed_reads: Option<bool>,
    pub output: String,
    pub history: PathBuf,
    pub html: PathBuf,
}

impl TestNs {
    /// The clients of [`Recorder`] against this namespace's replication `name`, through the
    /// Sentinel endpoints on `sentinels`.
    pub fn record_history(
        &self,
        name: &str,
        sentinels: Vec<u16>,
        password: &str,
        acks: u32,
    ) -> Recorder {
        Recorder::start(Target {
            sentinels,
            master_name: format!("{}.{name}", self.name),
            password: password.to_string(),
            acks,
        })
    }

    /// Writes `ops` to `<namespace>-<tag>.history.jsonl` in the artifacts and runs Porcupine on
    /// it (its visualisation, when it finds an anomaly, beside it as `.html`).
    pub fn check_history(&self, tag: &str, ops: &[Op]) -> Verdict {
        let history = self
            .env
            .artifacts
            .join(format!("{}-{tag}.history.jsonl", self.name));
        write_lines(&history, ops);
        let html = history.with_extension("html");
        let (strict, output) = check(&history, &html, &[]);
        let strict = strict.unwrap_or_else(|| panic!("the checker could not decide: {output}"));
        let (with_unconfirmed_reads, _) = check(
            &history,
            &history.with_extension("unconfirmed-reads.html"),
            &["-unconfirmed-reads", "-timeout", "20s"],
        );
        Verdict {
            linearizable: strict,
            with_unconfirmed_reads,
            output,
            history,
            html,
        }
    }
}

fn write_lines(path: &Path, ops: &[Op]) {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    );
    for op in ops {
        writeln!(file, "{}", op.json()).expect("write history");
    }
    file.flush().expect("write history");
}

/// Runs the checker on `history` (with more `args`): linearizable or not, or `None` when it could
/// not decide; and its output.
fn check(history: &Path, html: &Path, args: &[&str]) -> (Option<bool>, String) {
    let out = Command::new(clients_dir().join("linearizability"))
        .arg("-html")
        .arg(html)
        .args(["-timeout", "120s"])
        .args(args)
        .arg(history)
        .output()
        .expect("run the linearizability checker");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("linearizability {args:?}: {}", output.trim_end());
    let verdict = match out.status.code() {
        Some(0) => Some(true),
        Some(1) => Some(false),
        Some(3) => None,
        _ => panic!("the checker failed ({}): {output}", out.status),
    };
    (verdict, output)
}

impl Verdict {
    pub fn assert_linearizable(&self) {
        assert!(
            self.linearizable,
            "the history {} is not linearizable (Porcupine's drawing: {}):\n{}",
            self.history.display(),
            self.html.display(),
            self.output
        );
    }
}
