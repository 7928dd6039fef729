//! The parsing of `INFO`: the `replication` section into typed facts the rest of the code
//! reasons about, and the key count of `keyspace`. Pure, so every case is unit-tested.

use super::Address;

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

/// The sum of `keys=` over the `db<N>:keys=..,expires=..` lines of `INFO`, or `None` while
/// `loading:1` says the count is still growing.
pub(super) fn loaded_keyspace_keys(text: &str) -> Option<i64> {
    if text.lines().any(|l| l.trim_end() == "loading:1") {
        return None;
    }
    Some(keyspace_keys(text))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::FENCE_HOST;

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
    fn keyspace_counts_keys_of_every_database_once_loaded() {
        let text = "# Persistence\r\nloading:0\r\n\r\n# Keyspace\r\n\
            db0:keys=100000,expires=3,avg_ttl=0\r\ndb5:keys=2,expires=0,avg_ttl=0\r\n";
        assert_eq!(loaded_keyspace_keys(text), Some(100_002));
        assert_eq!(loaded_keyspace_keys("# Keyspace\r\n"), Some(0));
        // Mid-load: the keys loaded so far are not the restore's count.
        let loading = text.replace("loading:0", "loading:1");
        assert_eq!(loaded_keyspace_keys(&loading), None);
    }
}
