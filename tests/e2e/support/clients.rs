//! The Sentinel clients we did not write (tests/clients, installed by tools.sh) as processes
//! whose output the tests read line by line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{TestNs, wait_for};

/// Where tools.sh installed the clients (`python-redis`, `go-failover`, `java-failover`,
/// `node-failover`, `spring-failover`).
pub fn clients_dir() -> PathBuf {
    match std::env::var_os("VIGIL_E2E_CLIENTS") {
        Some(dir) => PathBuf::from(dir),
        None => panic!("VIGIL_E2E_CLIENTS is not set: run the e2e tests with tests/e2e.sh"),
    }
}

/// A client process whose stdout lines are collected with their arrival time; killed when
/// dropped.
pub struct ClientProcess {
    what: String,
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl ClientProcess {
    /// Starts `cmd`; its stderr goes to `<namespace>-<tag>.log` in the artifacts.
    pub fn spawn(t: &TestNs, tag: &str, mut cmd: Command) -> Self {
        let log = std::fs::File::create(t.env.artifacts.join(format!("{}-{tag}.log", t.name)))
            .expect("client log");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {tag} ({cmd:?}): {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), line));
            }
        });
        Self {
            what: tag.to_string(),
            child,
            lines,
        }
    }

    pub fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for `count` lines matching `matches`; returns the last of them.
    pub async fn wait_lines(
        &self,
        what: &str,
        timeout: Duration,
        count: usize,
        matches: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        wait_for(&format!("{}: {what}", self.what), timeout, || {
            let lines = self.lines();
            let hits: Vec<&(Instant, String)> = lines.iter().filter(|(_, l)| matches(l)).collect();
            let result = match hits.get(count - 1) {
                Some(hit) => Ok((*hit).clone()),
                None => Err(format!(
                    "{} of {count}; last lines: {:?}",
                    hits.len(),
                    lines
                        .iter()
                        .rev()
                        .take(5)
                        .map(|(_, l)| l)
                        .collect::<Vec<_>>()
                )),
            };
            async move { result }
        })
        .await
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client library under test, as installed by tools.sh (tests/clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Library {
    RedisPy,
    GoRedis,
    /// `JedisSentinelPool`.
    Jedis,
    /// `RedisClient.connect` of a sentinel `RedisURI`.
    Lettuce,
    /// `MasterReplica.connect` of a sentinel `RedisURI` (topology from Sentinel's events).
    LettuceMasterReplica,
    /// ioredis with its defaults.
    Ioredis,
    /// A Spring Boot application, Spring Data Redis in sentinel mode (Lettuce underneath).
    SpringDataRedis,
}

impl Library {
    pub const ALL: [Self; 7] = [
        Self::RedisPy,
        Self::GoRedis,
        Self::Jedis,
        Self::Lettuce,
        Self::LettuceMasterReplica,
        Self::Ioredis,
        Self::SpringDataRedis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::RedisPy => "redis-py",
            Self::GoRedis => "go-redis",
            Self::Jedis => "jedis",
            Self::Lettuce => "lettuce",
            Self::LettuceMasterReplica => "lettuce-mr",
            Self::Ioredis => "ioredis",
            Self::SpringDataRedis => "spring",
        }
    }

    /// A writer (`mode` "write") or, for redis-py and go-redis, a replica reader ("read").
    pub fn command(self, port: u16, name: &str, password: &str, mode: &str) -> Command {
        let java = |client: &str| {
            assert_eq!(mode, "write", "{client} only writes");
            let mut cmd = Command::new(clients_dir().join("java-failover"));
            cmd.args(["--client", client]);
            cmd
        };
        let mut cmd = match self {
            Self::RedisPy => {
                let mut cmd = Command::new(clients_dir().join("python-redis"));
                cmd.arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/clients/py-failover/failover.py"
                ));
                cmd.args(["--mode", mode]);
                cmd
            }
            Self::GoRedis => {
                let mut cmd = Command::new(clients_dir().join("go-failover"));
                cmd.args(["--mode", mode]);
                cmd
            }
            Self::Jedis => java("jedis"),
            Self::Lettuce => java("lettuce"),
            Self::LettuceMasterReplica => java("lettuce-mr"),
            Self::Ioredis | Self::SpringDataRedis => {
                assert_eq!(mode, "write", "{} only writes", self.name());
                Command::new(clients_dir().join(match self {
                    Self::Ioredis => "node-failover",
                    _ => "spring-failover",
                }))
            }
        };
        cmd.args(["--sentinel", &format!("127.0.0.1:{port}")])
            .args(["--master", name, "--password", password]);
        cmd
    }

    /// Its writer's `--duration` value for `seconds` (go-redis's flag takes a Go duration).
    pub fn duration(self, seconds: u64) -> String {
        match self {
            Self::GoRedis => format!("{seconds}s"),
            _ => seconds.to_string(),
        }
    }

    /// The prefix of the keys its writer sets.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Self::RedisPy => "vigil:py",
            Self::GoRedis => "vigil:go",
            Self::Jedis => "vigil:jedis",
            Self::Lettuce => "vigil:lettuce",
            Self::LettuceMasterReplica => "vigil:lettuce-mr",
            Self::Ioredis => "vigil:ioredis",
            Self::SpringDataRedis => "vigil:spring",
        }
    }
}
