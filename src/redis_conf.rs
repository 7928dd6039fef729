//! Rendering redis.conf. Pure, so what every instance runs with is unit-tested.
//!
//! Layout: defaults first, the user's settings next (they may override defaults), the settings
//! vigil owns last (redis.conf keeps the last value of a key, so ours always win).

use std::path::PathBuf;

use crate::api::Persistence;
use crate::redis::{Address, FENCE_HOST, FENCE_PORT, REDIS_PORT};
use crate::tls::{CA_KEY, CERT_KEY, PRIVATE_KEY_KEY};

/// File name of the instance's unix socket in the agent's run directory.
pub const UNIX_SOCKET: &str = "redis.sock";

/// What an instance's configuration depends on.
pub struct ConfInput<'a> {
    /// The pod's own address: bound, and announced to the master.
    pub pod_ip: &'a str,
    pub data_dir: &'a str,
    pub password: Option<&'a str>,
    /// The master to follow at boot; `None` boots fenced (safety rule 2).
    pub replica_of: Option<&'a Address>,
    /// The user's settings, already rendered as redis.conf lines.
    pub user_settings: &'a str,
    /// `min-replicas-to-write` and `min-replicas-max-lag` (they act on the master only).
    pub min_replicas: MinReplicas,
    pub persistence: Persistence,
    /// `spec.failover.downAfterMilliseconds`: the replication timeouts follow it.
    pub down_after: std::time::Duration,
    /// The unix socket the agent's own connections use, whatever the port serves.
    pub unix_socket: &'a str,
    /// TLS for clients and replication; `None` serves plain TCP.
    pub tls: Option<&'a TlsFiles>,
}

/// TLS from the files of a mounted `kubernetes.io/tls` Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub dir: PathBuf,
    /// Clients must present a certificate the CA signed (`tls-auth-clients yes`).
    pub auth_clients: bool,
}

impl TlsFiles {
    /// The port is TLS only: plain TCP is refused, and replicas link to their master over TLS.
    fn settings(&self) -> Vec<String> {
        let file = |key| quote(&self.dir.join(key).to_string_lossy());
        vec![
            "port 0".into(),
            format!("tls-port {REDIS_PORT}"),
            format!("tls-cert-file {}", file(CERT_KEY)),
            format!("tls-key-file {}", file(PRIVATE_KEY_KEY)),
            format!("tls-ca-cert-file {}", file(CA_KEY)),
            "tls-replication yes".into(),
            format!(
                "tls-auth-clients {}",
                if self.auth_clients { "yes" } else { "no" }
            ),
        ]
    }
}

/// Writes are refused unless this many replicas lag at most `max_lag` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinReplicas {
    pub to_write: i32,
    pub max_lag: i32,
}

impl MinReplicas {
    pub fn from_spec(spec: &crate::api::FailoverSpec) -> Self {
        Self {
            to_write: spec.min_replicas_to_write,
            max_lag: spec.min_replicas_max_lag,
        }
    }

    /// The settings as `(key, value)`, for redis.conf and `CONFIG SET` alike.
    pub fn settings(&self) -> [(&'static str, String); 2] {
        [
            ("min-replicas-to-write", self.to_write.to_string()),
            ("min-replicas-max-lag", self.max_lag.to_string()),
        ]
    }
}

pub fn render(input: &ConfInput<'_>) -> String {
    let mut out = String::from("# Rendered by `vigil agent` at every start; edits are lost.\n");
    out.push_str("# Defaults (spec.config may override)\n");
    // A diskless full sync starts at once: after a failover the returning old master is usually
    // the only instance that needs one, and Redis's default 5 s wait only delays its rejoin.
    let persistence: &[&str] = match input.persistence {
        Persistence::None => &["save \"\"", "appendonly no"],
        Persistence::Rdb => &["save 3600 1 300 100 60 10000", "appendonly no"],
        Persistence::Aof => &["save \"\"", "appendonly yes", "appendfsync everysec"],
    };
    for line in persistence.iter().chain(&[
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        "maxmemory-policy noeviction",
    ]) {
        out.push_str(line);
        out.push('\n');
    }
    for line in replication_timeouts(input.down_after) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("# spec.config\n");
    out.push_str(input.user_settings);
    if !input.user_settings.is_empty() && !input.user_settings.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("# Owned by vigil\n");
    let mut owned = vec![format!("bind {}", input.pod_ip)];
    match input.tls {
        Some(tls) => owned.extend(tls.settings()),
        None => owned.push(format!("port {REDIS_PORT}")),
    }
    owned.extend([
        format!("unixsocket {}", quote(input.unix_socket)),
        "unixsocketperm 700".into(),
        "protected-mode no".into(),
        "daemonize no".into(),
        "logfile \"\"".into(),
        format!("dir {}", quote(input.data_dir)),
        format!("replica-announce-ip {}", input.pod_ip),
        format!("replica-announce-port {REDIS_PORT}"),
        "replica-read-only yes".into(),
        "replica-serve-stale-data yes".into(),
    ]);
    for (key, value) in input.min_replicas.settings() {
        owned.push(format!("{key} {value}"));
    }
    if let Some(password) = input.password {
        owned.push(format!("requirepass {}", quote(password)));
        owned.push(format!("masterauth {}", quote(password)));
    }
    owned.push(match input.replica_of {
        Some(master) => format!("replicaof {} {}", master.host, master.port),
        None => format!("replicaof {FENCE_HOST} {FENCE_PORT}"),
    });
    for line in owned {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A master pings its replicas every second (Redis's default is 10 s), so a replica's offset
/// and `master_last_io_seconds_ago` show silence within `downAfter`; and a replica gives up a
/// link silent for twice `downAfter` (at least 5 s, well above the ping; Redis's default is
/// 60 s), so after a healed partition it reconnects at once instead of waiting out a stalled
/// TCP connection's back-off.
fn replication_timeouts(down_after: std::time::Duration) -> [String; 2] {
    let timeout = (down_after.as_millis() * 2).div_ceil(1000).max(5);
    [
        "repl-ping-replica-period 1".into(),
        format!("repl-timeout {timeout}"),
    ]
}

/// Quotes a value for redis.conf, so spaces, quotes and newlines survive its parser.
pub fn quote(value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(replica_of: Option<&'a Address>, user: &'a str) -> ConfInput<'a> {
        ConfInput {
            pod_ip: "127.0.0.12",
            data_dir: "/data",
            password: Some("p\"w"),
            replica_of,
            user_settings: user,
            min_replicas: MinReplicas {
                to_write: 1,
                max_lag: 10,
            },
            persistence: Persistence::None,
            down_after: std::time::Duration::from_secs(5),
            unix_socket: "/run/vigil/redis.sock",
            tls: None,
        }
    }

    #[test]
    fn a_replica_follows_its_master_with_auth() {
        let master = Address::new("127.0.0.10", 6379);
        let conf = render(&input(Some(&master), ""));
        assert!(conf.contains("\nreplicaof 127.0.0.10 6379\n"));
        assert!(conf.contains("\nrequirepass \"p\\\"w\"\n"));
        assert!(conf.contains("\nmasterauth \"p\\\"w\"\n"));
        assert!(conf.contains("\nbind 127.0.0.12\n"));
        assert!(conf.contains("\nreplica-announce-ip 127.0.0.12\n"));
    }

    #[test]
    fn persistence_modes_render_their_defaults() {
        let mut i = input(None, "");
        assert!(render(&i).contains("\nsave \"\"\nappendonly no\n"));
        i.persistence = Persistence::Rdb;
        assert!(render(&i).contains("\nsave 3600 1 300 100 60 10000\nappendonly no\n"));
        i.persistence = Persistence::Aof;
        assert!(render(&i).contains("\nappendonly yes\nappendfsync everysec\n"));
    }

    #[test]
    fn replication_timeouts_follow_down_after() {
        let mut i = input(None, "");
        assert!(render(&i).contains("\nrepl-ping-replica-period 1\nrepl-timeout 10\n"));
        i.down_after = std::time::Duration::from_millis(1000);
        assert!(render(&i).contains("\nrepl-timeout 5\n"), "never below 5 s");
        i.down_after = std::time::Duration::from_millis(30_500);
        assert!(render(&i).contains("\nrepl-timeout 61\n"));
        let user = render(&input(None, "repl-timeout 120\n"));
        let (defaults, rest) = user.split_once("# spec.config").expect("sections");
        assert!(defaults.contains("repl-timeout 10") && rest.contains("repl-timeout 120"));
    }

    #[test]
    fn min_replicas_settings_are_owned() {
        let conf = render(&input(None, ""));
        assert!(conf.contains("\nmin-replicas-to-write 1\n"));
        assert!(conf.contains("\nmin-replicas-max-lag 10\n"));
    }

    #[test]
    fn without_a_master_the_instance_boots_fenced() {
        let conf = render(&input(None, ""));
        assert!(conf.contains(&format!("\nreplicaof {FENCE_HOST} {FENCE_PORT}\n")));
        assert!(conf.contains("\nreplica-read-only yes\n"));
    }

    #[test]
    fn user_settings_sit_between_defaults_and_owned_settings() {
        let conf = render(&input(None, "save \"900 1\"\nmaxmemory \"1gb\""));
        let default_save = conf.find("save \"\"").expect("default");
        let user_save = conf.find("save \"900 1\"").expect("user");
        let owned = conf.find("bind ").expect("owned");
        assert!(default_save < user_save && user_save < owned);
        assert!(conf.contains("maxmemory \"1gb\"\n#"));
    }

    #[test]
    fn without_tls_the_port_is_plain_and_the_agent_has_its_socket() {
        let conf = render(&input(None, ""));
        assert!(conf.contains("\nport 6379\n"));
        assert!(!conf.contains("tls-"));
        assert!(conf.contains("\nunixsocket \"/run/vigil/redis.sock\"\nunixsocketperm 700\n"));
    }

    #[test]
    fn with_tls_the_port_is_tls_only_and_replication_uses_it() {
        let master = Address::new("127.0.0.10", 6379);
        let tls = TlsFiles {
            dir: "/etc/vigil-tls".into(),
            auth_clients: false,
        };
        let mut i = input(Some(&master), "");
        i.tls = Some(&tls);
        let conf = render(&i);
        for line in [
            "port 0",
            "tls-port 6379",
            "tls-cert-file \"/etc/vigil-tls/tls.crt\"",
            "tls-key-file \"/etc/vigil-tls/tls.key\"",
            "tls-ca-cert-file \"/etc/vigil-tls/ca.crt\"",
            "tls-replication yes",
            "tls-auth-clients no",
            "unixsocket \"/run/vigil/redis.sock\"",
            "replicaof 127.0.0.10 6379",
        ] {
            assert!(conf.contains(&format!("\n{line}\n")), "{line} in {conf}");
        }
        assert!(!conf.contains("\nport 6379\n"));
        let auth_clients = TlsFiles {
            auth_clients: true,
            ..tls.clone()
        };
        i.tls = Some(&auth_clients);
        assert!(render(&i).contains("\ntls-auth-clients yes\n"));
    }

    #[test]
    fn no_password_no_auth_lines() {
        let mut i = input(None, "");
        i.password = None;
        let conf = render(&i);
        assert!(!conf.contains("requirepass"));
        assert!(!conf.contains("masterauth"));
    }
}
