//! A small client for one Redis instance: what the operator and the agent ask of it.
//!
//! The parsing of `INFO replication` is pure so the rest of the code reasons about typed facts.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, RedisConnectionInfo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::tls::TlsClient;

#[cfg(test)]
pub(crate) mod fake;
mod handover;

/// The port every instance listens on.
pub const REDIS_PORT: u16 = 6379;

/// Where a fenced instance "replicates" from: nothing listens there, so the instance stays
/// read-only and refuses to feed replicas (NOMASTERLINK) until the operator decides its role.
pub const FENCE_HOST: &str = "127.0.0.1";
pub const FENCE_PORT: u16 = 1;

/// The channel of the master's heartbeat (safety rule 9).
pub const HEARTBEAT_CHANNEL: &str = "__vigil__:heartbeat";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to redis at {addr}: {source}")]
    Connect {
        addr: String,
        source: ::redis::RedisError,
    },
    #[error("cannot reach redis at {addr}: {source}")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "TLS handshake with redis at {addr} (expecting a certificate for {server_name}) failed: {source}"
    )]
    Tls {
        addr: String,
        server_name: String,
        source: std::io::Error,
    },
    #[error("redis at {addr} did not complete the connection within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("redis at {addr} failed `{command}`: {source}")]
    Command {
        addr: String,
        command: &'static str,
        source: ::redis::RedisError,
    },
    #[error("redis at {addr} answered `{command}` with something unexpected: {detail}")]
    Unexpected {
        addr: String,
        command: &'static str,
        detail: String,
    },
}

/// `host:port` of an instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl Address {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Parses `host:port` (IPv6 hosts in brackets).
    pub fn parse(s: &str) -> Option<Self> {
        let (host, port) = s.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some(Self::new(host, port.parse().ok()?))
    }

    pub fn is_fence(&self) -> bool {
        self.host == FENCE_HOST && self.port == FENCE_PORT
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The role an instance reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica {
        master: Address,
        link_up: bool,
        sync_in_progress: bool,
        /// Seconds since the link to the master went down (`master_link_down_since_seconds`).
        link_down_seconds: Option<u64>,
    },
}

/// A replica as its master sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectedReplica {
    pub address: Address,
    pub state: String,
    pub offset: i64,
    /// Seconds since its last acknowledgement (`lag`; replicas ack every second).
    pub lag_seconds: Option<i64>,
}

/// The parsed `INFO replication` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationInfo {
    pub role: Role,
    /// `master_repl_offset`: how much of the replication stream this instance holds.
    pub offset: i64,
    pub replid: String,
    /// The previous replication id, kept after a promotion so old replicas can resync partially.
    pub replid2: String,
    /// First offset that belongs to `replid` rather than `replid2` (`second_repl_offset`).
    pub second_offset: Option<i64>,
    pub replicas: Vec<ConnectedReplica>,
}

impl ReplicationInfo {
    /// Parses the text of `INFO replication`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut role = None;
        let mut master_host = None;
        let mut master_port = None;
        let mut link_up = false;
        let mut sync_in_progress = false;
        let mut offset = 0;
        let mut replid = String::new();
        let mut replid2 = String::new();
        let mut second_offset = None;
        let mut link_down_seconds = None;
        let mut replicas = Vec::new();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            match key {
                "role" => role = Some(value.to_string()),
                "master_host" => master_host = Some(value.to_string()),
                "master_port" => master_port = value.parse::<u16>().ok(),
                "master_link_status" => link_up = value == "up",
                "master_sync_in_progress" => sync_in_progress = value == "1",
                "master_repl_offset" => {
                    offset = value
                        .parse()
                        .map_err(|_| format!("bad master_repl_offset {value:?}"))?
                }
                "master_replid" => replid = value.to_string(),
                "master_replid2" => replid2 = value.to_string(),
                "second_repl_offset" => second_offset = value.parse().ok().filter(|o| *o >= 0),
                "master_link_down_since_seconds" => link_down_seconds = value.parse().ok(),
                k if k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit()) => {
                    replicas.push(parse_connected_replica(value)?);
                }
                _ => {}
            }
        }
        let role = match role.as_deref() {
            Some("master") => Role::Master,
            Some("slave") => Role::Replica {
                master: Address::new(
                    master_host.ok_or("replica without master_host")?,
                    master_port.ok_or("replica without master_port")?,
                ),
                link_up,
                sync_in_progress,
                link_down_seconds: if link_up { None } else { link_down_seconds },
            },
            other => return Err(format!("unknown role {other:?}")),
        };
        Ok(Self {
            role,
            offset,
            replid,
            replid2,
            second_offset,
            replicas,
        })
    }

    /// A fixture for tests elsewhere in the crate.
    #[cfg(test)]
    pub(crate) fn fixture(role: Role, offset: i64) -> Self {
        Self {
            role,
            offset,
            replid: "r".into(),
            replid2: String::new(),
            second_offset: None,
            replicas: vec![],
        }
    }

    /// Read-only and following nobody, waiting for the operator.
    pub fn is_fenced(&self) -> bool {
        matches!(&self.role, Role::Replica { master, .. } if master.is_fence())
    }

    pub fn is_master(&self) -> bool {
        self.role == Role::Master
    }

    /// The master this instance follows, if it follows a real one.
    pub fn following(&self) -> Option<&Address> {
        match &self.role {
            Role::Replica { master, .. } if !master.is_fence() => Some(master),
            _ => None,
        }
    }

    /// A replica linked to its master and not in the middle of a full sync.
    pub fn is_synced_replica(&self) -> bool {
        matches!(
            &self.role,
            Role::Replica { master, link_up: true, sync_in_progress: false, .. } if !master.is_fence()
        )
    }

    /// Bytes of writes this (old) master took after `new_master` was promoted from its history:
    /// they cannot reach the new master and are discarded when this instance follows it.
    pub fn writes_after_split(&self, new_master: &ReplicationInfo) -> Option<i64> {
        let split = new_master.second_offset?;
        (new_master.replid2 == self.replid).then(|| (self.offset - (split - 1)).max(0))
    }
}

fn parse_connected_replica(value: &str) -> Result<ConnectedReplica, String> {
    let mut ip = None;
    let mut port = None;
    let mut state = String::new();
    let mut offset = 0;
    let mut lag_seconds = None;
    for field in value.split(',') {
        match field.split_once('=') {
            Some(("ip", v)) => ip = Some(v.to_string()),
            Some(("port", v)) => port = v.parse().ok(),
            Some(("state", v)) => state = v.to_string(),
            Some(("offset", v)) => offset = v.parse().unwrap_or(0),
            Some(("lag", v)) => lag_seconds = v.parse().ok(),
            _ => {}
        }
    }
    Ok(ConnectedReplica {
        address: Address::new(
            ip.ok_or_else(|| format!("replica entry without ip: {value}"))?,
            port.ok_or_else(|| format!("replica entry without port: {value}"))?,
        ),
        state,
        offset,
        lag_seconds,
    })
}

/// What connecting to the instances of one replication takes: the password, and with
/// `spec.tls` the operator's TLS client.
#[derive(Clone, Default)]
pub struct Credentials {
    pub password: Option<String>,
    pub tls: Option<TlsClient>,
}

/// A byte stream a connection runs on: TCP, TLS over TCP, or a unix socket.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A connection to one instance, with bounded connect and response times.
pub struct InstanceClient {
    /// Where it is connected, for errors.
    addr: String,
    conn: MultiplexedConnection,
    /// The task that drives `conn`; it stops with the client.
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for InstanceClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl InstanceClient {
    /// Connects to instance `pod` at `addr`; with TLS, the instance's certificate must name the
    /// pod (see [`TlsClient`]).
    pub async fn connect(
        pod: &str,
        addr: &Address,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let target = addr.to_string();
        let stream = async {
            let tcp = TcpStream::connect((addr.host.as_str(), addr.port))
                .await
                .map_err(|source| Error::Unreachable {
                    addr: target.clone(),
                    source,
                })?;
            let Some(tls) = &credentials.tls else {
                return Ok(Box::new(tcp) as Box<dyn Stream>);
            };
            match tls.handshake(pod, tcp).await {
                Ok(stream) => Ok(Box::new(stream) as Box<dyn Stream>),
                Err(source) => Err(Error::Tls {
                    addr: target.clone(),
                    server_name: tls.server_name(pod),
                    source,
                }),
            }
        };
        Self::open(&target, stream, credentials.password.as_deref(), timeout).await
    }

    /// Connects through the instance's unix socket: the agent's own connections, which work
    /// whether the instance's port speaks TLS or not.
    pub async fn connect_local(
        socket: &Path,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let target = socket.display().to_string();
        let stream = async {
            match UnixStream::connect(socket).await {
                Ok(stream) => Ok(Box::new(stream) as Box<dyn Stream>),
                Err(source) => Err(Error::Unreachable {
                    addr: target.clone(),
                    source,
                }),
            }
        };
        Self::open(&target, stream, password, timeout).await
    }

    /// Opens `stream` and sets the connection up on it (AUTH, client name), all within
    /// `timeout`; every command then answers within `timeout` too.
    async fn open(
        addr: &str,
        stream: impl Future<Output = Result<Box<dyn Stream>, Error>>,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let mut settings =
            RedisConnectionInfo::default().set_lib_name("vigil", env!("CARGO_PKG_VERSION"));
        if let Some(password) = password {
            settings = settings.set_password(password);
        }
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(timeout));
        let setup = async {
            MultiplexedConnection::new_with_config(&settings, stream.await?, config)
                .await
                .map_err(|source| Error::Connect {
                    addr: addr.to_string(),
                    source,
                })
        };
        let (conn, driver) =
            tokio::time::timeout(timeout, setup)
                .await
                .map_err(|_| Error::Timeout {
                    addr: addr.to_string(),
                    timeout,
                })??;
        Ok(Self {
            addr: addr.to_string(),
            conn,
            driver: tokio::spawn(driver),
        })
    }

    /// Resolves when the connection has ended (the server closed it, or it broke): for a
    /// monitor, the first sign that an instance went away, without waiting for a probe. Await
    /// it at most once to completion; the client is then of no use.
    pub async fn closed(&mut self) {
        let _ = (&mut self.driver).await;
    }

    async fn query<T: ::redis::FromRedisValue>(
        &mut self,
        command: &'static str,
        cmd: &::redis::Cmd,
    ) -> Result<T, Error> {
        cmd.query_async(&mut self.conn)
            .await
            .map_err(|source| Error::Command {
                addr: self.addr.clone(),
                command,
                source,
            })
    }

    pub async fn ping(&mut self) -> Result<(), Error> {
        let _: String = self.query("PING", &::redis::cmd("PING")).await?;
        Ok(())
    }

    pub async fn replication_info(&mut self) -> Result<ReplicationInfo, Error> {
        let mut cmd = ::redis::cmd("INFO");
        cmd.arg("replication");
        let text: String = self.query("INFO replication", &cmd).await?;
        ReplicationInfo::parse(&text).map_err(|detail| Error::Unexpected {
            addr: self.addr.clone(),
            command: "INFO replication",
            detail,
        })
    }

    /// Makes this instance follow `upstream` (`None`: a writable master) and, in the same
    /// `MULTI`/`EXEC`, closes its normal and pub/sub clients, as Sentinel does: a client never
    /// keeps talking to an instance whose role changed under it, so it re-resolves the master.
    /// Replication links and this connection stay open.
    pub async fn change_role(&mut self, upstream: Option<&Address>) -> Result<(), Error> {
        let command = match upstream {
            Some(_) => "MULTI REPLICAOF host port",
            None => "MULTI REPLICAOF NO ONE",
        };
        let _: ::redis::Value = role_change(upstream)
            .query_async(&mut self.conn)
            .await
            .map_err(|source| Error::Command {
                addr: self.addr.clone(),
                command,
                source,
            })?;
        Ok(())
    }

    /// Safety rule 9's heartbeat: a `PUBLISH` that moves the replication offset, then `WAIT`
    /// for `quorum` replicas to acknowledge it (Redis asks them at once), at most `wait_ms`.
    /// Returns how many did. Nobody subscribes to the channel; the offset is what it moves.
    pub async fn heartbeat(&mut self, quorum: u32, wait_ms: u64) -> Result<i64, Error> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("PUBLISH")
            .arg(HEARTBEAT_CHANNEL)
            .arg("")
            .ignore()
            .cmd("WAIT")
            .arg(quorum)
            .arg(wait_ms);
        let (acks,): (i64,) =
            pipe.query_async(&mut self.conn)
                .await
                .map_err(|source| Error::Command {
                    addr: self.addr.clone(),
                    command: "PUBLISH + WAIT",
                    source,
                })?;
        Ok(acks)
    }

    /// Keys in every database (`INFO keyspace`).
    pub async fn keys(&mut self) -> Result<i64, Error> {
        let mut cmd = ::redis::cmd("INFO");
        cmd.arg("keyspace");
        let text: String = self.query("INFO keyspace", &cmd).await?;
        Ok(keyspace_keys(&text))
    }

    /// `CONFIG SET key value`.
    pub async fn config_set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        let mut cmd = ::redis::cmd("CONFIG");
        cmd.arg("SET").arg(key).arg(value);
        let _: String = self.query("CONFIG SET", &cmd).await?;
        Ok(())
    }

    /// `SHUTDOWN` with the given modifiers; the connection closing is the expected answer.
    pub async fn shutdown(&mut self, modifiers: &[&str]) -> Result<(), Error> {
        let mut cmd = ::redis::cmd("SHUTDOWN");
        for m in modifiers {
            cmd.arg(*m);
        }
        match self.query::<::redis::Value>("SHUTDOWN", &cmd).await {
            Err(Error::Command { source, .. })
                if source.is_connection_dropped() || source.is_io_error() =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }
}

/// The sum of `keys=` over the `db<N>:keys=..,expires=..` lines of `INFO keyspace`.
fn keyspace_keys(text: &str) -> i64 {
    text.lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| {
            l.split_once(':')?
                .1
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))
        })
        .filter_map(|n| n.trim().parse::<i64>().ok())
        .sum()
}

/// `MULTI; REPLICAOF ...; CLIENT KILL TYPE normal; CLIENT KILL TYPE pubsub; EXEC`.
fn role_change(upstream: Option<&Address>) -> ::redis::Pipeline {
    let mut pipe = ::redis::pipe();
    pipe.atomic();
    let replicaof = pipe.cmd("REPLICAOF");
    match upstream {
        Some(a) => replicaof.arg(&a.host).arg(a.port),
        None => replicaof.arg("NO").arg("ONE"),
    };
    disconnect_clients(&mut pipe);
    pipe
}

/// The client kills Sentinel sends with every reconfiguration (`SKIPME yes` keeps the sender).
fn disconnect_clients(pipe: &mut ::redis::Pipeline) -> &mut ::redis::Pipeline {
    for kind in ["normal", "pubsub"] {
        pipe.cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .arg("SKIPME")
            .arg("yes");
    }
    pipe
}

#[cfg(test)]
mod tests {
    #[test]
    fn keyspace_counts_keys_of_every_database() {
        let text = "# Keyspace\r\ndb0:keys=100000,expires=3,avg_ttl=0\r\ndb5:keys=2,expires=0,avg_ttl=0\r\n";
        assert_eq!(super::keyspace_keys(text), 100_002);
        assert_eq!(super::keyspace_keys("# Keyspace\r\n"), 0);
    }

    use super::*;

    const MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=127.0.0.11,port=6379,state=online,offset=1234,lag=0\r\n\
        slave1:ip=127.0.0.12,port=6379,state=wait_bgsave,offset=0,lag=1\r\n\
        master_failover_state:no-failover\r\n\
        master_replid:8e3b0f5c\r\nmaster_replid2:0000\r\nmaster_repl_offset:1234\r\n";

    const REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.10\r\n\
        master_port:6379\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\n\
        slave_repl_offset:1200\r\nslave_read_only:1\r\nconnected_slaves:0\r\n\
        master_replid:8e3b0f5c\r\nmaster_replid2:0000000000000000000000000000000000000000\r\n\
        master_repl_offset:1200\r\nsecond_repl_offset:-1\r\n";

    #[test]
    fn parses_a_master() {
        let info = ReplicationInfo::parse(MASTER).expect("parses");
        assert!(info.is_master());
        assert_eq!(info.offset, 1234);
        assert_eq!(info.replicas.len(), 2);
        assert_eq!(info.replicas[0].address, Address::new("127.0.0.11", 6379));
        assert_eq!(info.replicas[1].state, "wait_bgsave");
        assert_eq!(info.replicas[1].lag_seconds, Some(1));
        assert_eq!(info.following(), None);
    }

    #[test]
    fn parses_a_synced_replica() {
        let info = ReplicationInfo::parse(REPLICA).expect("parses");
        assert!(info.is_synced_replica());
        assert_eq!(info.following(), Some(&Address::new("127.0.0.10", 6379)));
        assert_eq!(info.offset, 1200);
    }

    #[test]
    fn a_fenced_instance_follows_nobody_and_is_not_synced() {
        let text = REPLICA
            .replace("127.0.0.10", FENCE_HOST)
            .replace("master_port:6379", "master_port:1")
            .replace("link_status:up", "link_status:down");
        let info = ReplicationInfo::parse(&text).expect("parses");
        assert!(info.is_fenced());
        assert_eq!(info.following(), None);
        assert!(!info.is_synced_replica());
    }

    #[test]
    fn a_broken_link_reports_how_long_it_is_down() {
        let text = REPLICA.replace("link_status:up", "link_status:down")
            + "master_link_down_since_seconds:7\r\n";
        let info = ReplicationInfo::parse(&text).expect("parses");
        assert!(matches!(
            info.role,
            Role::Replica {
                link_down_seconds: Some(7),
                ..
            }
        ));
        let up = ReplicationInfo::parse(
            &(REPLICA.to_string() + "master_link_down_since_seconds:-1\r\n"),
        )
        .expect("parses");
        assert!(matches!(
            up.role,
            Role::Replica {
                link_down_seconds: None,
                ..
            }
        ));
        assert_eq!(up.second_offset, None);
    }

    #[test]
    fn counts_writes_an_old_master_took_after_the_split() {
        let old = ReplicationInfo::parse(MASTER).expect("parses");
        let promoted = ReplicationInfo::parse(&MASTER.replace(
            "master_replid:8e3b0f5c\r\nmaster_replid2:0000",
            "master_replid:99aa\r\nmaster_replid2:8e3b0f5c\r\nsecond_repl_offset:1235",
        ))
        .expect("parses");
        assert_eq!(promoted.second_offset, Some(1235));
        let mut ahead = old.clone();
        ahead.offset = 1534;
        assert_eq!(ahead.writes_after_split(&promoted), Some(300));
        assert_eq!(old.writes_after_split(&promoted), Some(0));
        assert_eq!(old.writes_after_split(&old), None, "same history: no split");
    }

    #[test]
    fn rejects_garbage() {
        assert!(ReplicationInfo::parse("hello").is_err());
        assert!(ReplicationInfo::parse("role:slave\r\n").is_err());
        assert!(ReplicationInfo::parse("role:master\r\nmaster_repl_offset:x\r\n").is_err());
    }

    #[test]
    fn addresses_round_trip() {
        for s in ["127.0.0.1:6379", "[::1]:6379", "redis-0.redis:7000"] {
            assert_eq!(Address::parse(s).expect(s).to_string(), s);
        }
        assert_eq!(Address::parse("nope"), None);
        assert_eq!(Address::parse(":6379"), None);
    }

    /// The words of each command of a packed pipeline, in order.
    pub(super) fn commands(pipe: &::redis::Pipeline) -> Vec<String> {
        let packed = String::from_utf8(pipe.get_packed_pipeline()).expect("utf-8");
        let mut out = Vec::new();
        let mut words: Vec<&str> = Vec::new();
        for line in packed.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with('*') {
                if !words.is_empty() {
                    out.push(words.join(" "));
                }
                words = Vec::new();
            } else if !line.starts_with('$') {
                words.push(line);
            }
        }
        if !words.is_empty() {
            out.push(words.join(" "));
        }
        out
    }

    #[test]
    fn a_role_change_closes_clients_in_the_same_transaction() {
        let demote = role_change(Some(&Address::new("10.244.0.12", 6379)));
        assert_eq!(
            commands(&demote),
            [
                "MULTI",
                "REPLICAOF 10.244.0.12 6379",
                "CLIENT KILL TYPE normal SKIPME yes",
                "CLIENT KILL TYPE pubsub SKIPME yes",
                "EXEC"
            ]
        );
        let promote = role_change(None);
        assert_eq!(commands(&promote)[1], "REPLICAOF NO ONE");
        assert_eq!(commands(&promote).len(), 5);
    }
}
