//! A small client for one Redis instance: what the operator and the agent ask of it.
//!
//! The parsing of `INFO replication` is pure (module `info`) so the rest of the code reasons about
//! typed facts.

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
mod info;

use info::loaded_keyspace_keys;
pub use info::{ConnectedReplica, ReplicationInfo, Role};

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

    /// A pipeline (or `MULTI`/`EXEC`) as one command: `command` names it in errors.
    async fn query_pipe<T: ::redis::FromRedisValue>(
        &mut self,
        command: &'static str,
        pipe: &::redis::Pipeline,
    ) -> Result<T, Error> {
        pipe.query_async(&mut self.conn)
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
        let _: ::redis::Value = self.query_pipe(command, &role_change(upstream)).await?;
        Ok(())
    }

    /// Safety rule 9's fence, in one `MULTI`/`EXEC` so that it takes one bounded command:
    /// stale reads off (a linearizable read never comes from a fenced instance), follow
    /// nobody, and close the clients so they re-resolve the master.
    pub async fn fence(&mut self) -> Result<(), Error> {
        let mut pipe = role_change(Some(&Address::new(FENCE_HOST, FENCE_PORT)));
        pipe.cmd("CONFIG")
            .arg("SET")
            .arg("replica-serve-stale-data")
            .arg("no");
        let _: ::redis::Value = self
            .query_pipe("MULTI REPLICAOF (fence) CONFIG SET", &pipe)
            .await?;
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
        let (acks,): (i64,) = self.query_pipe("PUBLISH + WAIT", &pipe).await?;
        Ok(acks)
    }

    /// Keys in every database once the instance has loaded its data; `None` while it is still
    /// loading (it answers `INFO` then, and role master, with the keys loaded so far). Plain
    /// `INFO`: its default sections hold both `persistence` and `keyspace` on every version.
    pub async fn loaded_keys(&mut self) -> Result<Option<i64>, Error> {
        let cmd = ::redis::cmd("INFO");
        let text: String = self.query("INFO", &cmd).await?;
        Ok(loaded_keyspace_keys(&text))
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
    use super::*;

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
