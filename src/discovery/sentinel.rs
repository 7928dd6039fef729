//! `SENTINEL <subcommand>`: what a Redis Sentinel answers about the masters it monitors, its
//! replicas and its peer Sentinels, with the field names and order of Redis Sentinel 7 (clients
//! read the fields by name; a test compares them with a real `redis-sentinel`), and Valkey's
//! names for the same subcommands.

use std::time::Instant;

use bytes::Bytes;

use super::catalog::{MasterView, ReplicaView};
use super::commands::{Context, arity, lower};
use super::peers::Peer;
use super::resp::Reply;
use crate::redis::Address;

/// Sentinel's default `failover-timeout` and `parallel-syncs`, reported as such: the operator's
/// failover has neither knob.
const FAILOVER_TIMEOUT_MS: &str = "180000";
const PARALLEL_SYNCS: &str = "1";
/// The `replica-priority` Redis defaults to; the operator picks by offset (safety rule 4).
const REPLICA_PRIORITY: &str = "100";

/// The subcommands served; Valkey's names are aliases of Redis's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subcommand {
    GetMasterAddrByName,
    Master,
    Masters,
    Replicas,
    Sentinels,
    Myid,
    Ckquorum,
    Failover,
}

impl Subcommand {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "get-master-addr-by-name" | "get-primary-addr-by-name" => Self::GetMasterAddrByName,
            "master" | "primary" => Self::Master,
            "masters" | "primaries" => Self::Masters,
            "replicas" | "slaves" => Self::Replicas,
            "sentinels" => Self::Sentinels,
            "myid" => Self::Myid,
            "ckquorum" => Self::Ckquorum,
            "failover" => Self::Failover,
            _ => return None,
        })
    }

    /// Arguments after the subcommand.
    fn arguments(self) -> usize {
        match self {
            Self::Masters | Self::Myid => 0,
            _ => 1,
        }
    }
}

/// Runs `SENTINEL ...` (`args[0]` is `SENTINEL`).
pub fn run(args: &[Bytes], ctx: &Context<'_>) -> Reply {
    let Some(sub) = args.get(1) else {
        return arity("sentinel");
    };
    let name = lower(sub);
    let Some(command) = Subcommand::parse(&name) else {
        return Reply::error(format!(
            "ERR unknown subcommand '{}'. Try SENTINEL HELP.",
            String::from_utf8_lossy(sub)
        ));
    };
    if command == Subcommand::Failover {
        return Reply::error(
            "ERR vigil fails over by itself when a master fails; delete the master pod for a \
             planned switchover",
        );
    }
    if args.len() != 2 + command.arguments() {
        return arity(&format!("sentinel|{name}"));
    }
    let now = Instant::now();
    match command {
        Subcommand::Masters => Reply::Array(
            ctx.catalog
                .masters()
                .into_iter()
                .map(|(view, address)| master(view, address, ctx.peers_of(view).count(), now))
                .collect(),
        ),
        Subcommand::Myid => Reply::bulk(ctx.run_id.to_string()),
        _ => {
            let found = ctx.catalog.get(&String::from_utf8_lossy(&args[2]));
            match (command, found) {
                (Subcommand::GetMasterAddrByName, None) => Reply::NullArray,
                (_, None) => Reply::error("ERR No such master with that name"),
                (Subcommand::GetMasterAddrByName, Some((_, address))) => Reply::Array(vec![
                    Reply::bulk(address.host.clone()),
                    Reply::bulk(address.port.to_string()),
                ]),
                (Subcommand::Master, Some((view, address))) => {
                    master(view, address, ctx.peers_of(view).count(), now)
                }
                (Subcommand::Replicas, Some((view, address))) => Reply::Array(
                    view.replicas
                        .iter()
                        .map(|r| replica(view, address, r, now))
                        .collect(),
                ),
                // Every other operator replica serving this master, never this one.
                (Subcommand::Sentinels, Some((view, _))) => {
                    Reply::Array(ctx.peers_of(view).map(|p| sentinel(view, p, now)).collect())
                }
                (_, Some((view, _))) => Reply::Simple(format!(
                    "OK {} usable Sentinels. Quorum and failover authorization can be reached",
                    1 + ctx.peers_of(view).count()
                )),
            }
        }
    }
}

/// Milliseconds from `since` to `now`, as Sentinel's "...-time" and "last-..." fields count.
fn millis(since: Instant, now: Instant) -> String {
    now.saturating_duration_since(since).as_millis().to_string()
}

/// The fields every instance type starts with. The status is the operator's view of the
/// instance, refreshed from its probes: its age stands for the ping and INFO ages.
fn common(
    name: String,
    address: &Address,
    flags: &str,
    view: &MasterView,
    now: Instant,
) -> Vec<(&'static str, String)> {
    let age = millis(view.observed, now);
    vec![
        ("name", name),
        ("ip", address.host.clone()),
        ("port", address.port.to_string()),
        // The status does not record the instances' run ids.
        ("runid", String::new()),
        ("flags", flags.to_string()),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", age.clone()),
        ("last-ping-reply", age),
    ]
}

/// One master, as `SENTINEL MASTER` describes it.
fn master(view: &MasterView, address: &Address, peers: usize, now: Instant) -> Reply {
    let mut flags = Vec::new();
    if view.down {
        flags.push("s_down");
    }
    flags.push("master");
    if view.failing_over {
        flags.push("failover_in_progress");
    }
    let mut fields = common(view.name.clone(), address, &flags.join(","), view, now);
    if view.failing_over {
        // The operator reports the promotion as one step.
        fields.insert(7, ("failover-state", "wait_promotion".into()));
    }
    if let Some(since) = view.down_since {
        fields.push(("s-down-time", millis(since, now)));
    }
    fields.extend([
        (
            "down-after-milliseconds",
            view.down_after_milliseconds.to_string(),
        ),
        ("info-refresh", millis(view.observed, now)),
        ("role-reported", "master".into()),
        ("role-reported-time", millis(view.observed, now)),
        ("config-epoch", view.epoch.to_string()),
        ("num-slaves", view.replicas.len().to_string()),
        ("num-other-sentinels", peers.to_string()),
        ("quorum", "1".into()),
        ("failover-timeout", FAILOVER_TIMEOUT_MS.into()),
        ("parallel-syncs", PARALLEL_SYNCS.into()),
    ]);
    Reply::fields(fields)
}

/// One entry of `SENTINEL REPLICAS`; clients skip those flagged down or disconnected.
fn replica(view: &MasterView, master: &Address, r: &ReplicaView, now: Instant) -> Reply {
    let (master_host, master_port) = if r.link_up {
        (master.host.clone(), master.port.to_string())
    } else {
        ("?".into(), "0".into())
    };
    let flags = if r.healthy {
        "slave"
    } else {
        "s_down,slave,disconnected"
    };
    let mut fields = common(r.address.to_string(), &r.address, flags, view, now);
    if !r.healthy {
        fields.push(("s-down-time", millis(view.observed, now)));
    }
    fields.extend([
        (
            "down-after-milliseconds",
            view.down_after_milliseconds.to_string(),
        ),
        ("info-refresh", millis(view.observed, now)),
        ("role-reported", "slave".into()),
        ("role-reported-time", millis(view.observed, now)),
        // Sentinel's value while the link is up.
        ("master-link-down-time", "0".into()),
        (
            "master-link-status",
            if r.link_up { "ok" } else { "err" }.into(),
        ),
        ("master-host", master_host),
        ("master-port", master_port),
        ("slave-priority", REPLICA_PRIORITY.into()),
        ("slave-repl-offset", r.offset.to_string()),
        ("replica-announced", "1".into()),
    ]);
    Reply::fields(fields)
}

/// One entry of `SENTINEL SENTINELS`: another operator replica. Sentinel names its peers by
/// run id.
fn sentinel(view: &MasterView, peer: &Peer, now: Instant) -> Reply {
    let mut fields = common(peer.run_id.clone(), &peer.address, "sentinel", view, now);
    fields[3].1 = peer.run_id.clone();
    fields.extend([
        (
            "down-after-milliseconds",
            view.down_after_milliseconds.to_string(),
        ),
        ("last-hello-message", millis(peer.renewed, now)),
        // Sentinels vote for a failover leader; the operator's replicas hold a Lease instead.
        ("voted-leader", "?".into()),
        ("voted-leader-epoch", "0".into()),
    ]);
    Reply::fields(fields)
}

#[cfg(test)]
mod tests {
    use super::super::commands::Session;
    use super::super::commands::tests::{bulk, catalog, execute_with, field, one};
    use super::super::peers::Scope;
    use super::*;

    #[test]
    fn get_master_addr_by_name_answers_the_address_or_a_null_array() {
        let (c, mut s) = (catalog(), Session::new(1, false));
        assert_eq!(
            one(&mut s, &c, "SENTINEL get-master-addr-by-name ns.cache"),
            Reply::Array(vec![bulk("10.0.0.1"), bulk("6379")])
        );
        assert_eq!(
            one(&mut s, &c, "sentinel GET-MASTER-ADDR-BY-NAME nope"),
            Reply::NullArray
        );
        assert_eq!(
            one(&mut s, &c, "SENTINEL get-master-addr-by-name"),
            Reply::error(
                "ERR wrong number of arguments for 'sentinel|get-master-addr-by-name' command"
            )
        );
        assert_eq!(
            one(&mut s, &c, "SENTINEL master nope"),
            Reply::error("ERR No such master with that name")
        );
    }

    #[test]
    fn master_and_replica_state_carry_the_fields_clients_read() {
        let (c, mut s) = (catalog(), Session::new(1, false));
        let master = one(&mut s, &c, "SENTINEL master ns.cache");
        for (name, value) in [
            ("name", "ns.cache"),
            ("ip", "10.0.0.1"),
            ("port", "6379"),
            ("flags", "master"),
            ("num-slaves", "2"),
            ("num-other-sentinels", "0"),
            ("quorum", "1"),
            ("config-epoch", "1"),
        ] {
            assert_eq!(field(&master, name).as_deref(), Some(value), "{name}");
        }
        assert_eq!(
            one(&mut s, &c, "SENTINEL masters"),
            Reply::Array(vec![master])
        );
        let Reply::Array(replicas) = one(&mut s, &c, "SENTINEL slaves ns.cache") else {
            panic!("array")
        };
        assert_eq!(replicas, {
            let Reply::Array(r) = one(&mut s, &c, "SENTINEL replicas ns.cache") else {
                panic!("array")
            };
            r
        });
        let summary: Vec<(Option<String>, Option<String>, Option<String>)> = replicas
            .iter()
            .map(|r| (field(r, "name"), field(r, "flags"), field(r, "master-host")))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    Some("10.0.0.2:6379".into()),
                    Some("slave".into()),
                    Some("10.0.0.1".into())
                ),
                (
                    Some("10.0.0.3:6379".into()),
                    Some("s_down,slave,disconnected".into()),
                    Some("?".into())
                ),
            ]
        );
        assert_eq!(
            one(&mut s, &c, "SENTINEL sentinels ns.cache"),
            Reply::Array(vec![])
        );
        assert!(matches!(
            one(&mut s, &c, "SENTINEL ckquorum ns.cache"),
            Reply::Simple(m) if m.starts_with("OK 1 usable Sentinels")
        ));
        assert_eq!(
            one(&mut s, &c, "ROLE"),
            Reply::Array(vec![bulk("sentinel"), Reply::Array(vec![bulk("ns.cache")])])
        );
    }

    fn peer(run_id: &str, port: u16, scope: Scope) -> Peer {
        Peer {
            run_id: run_id.into(),
            address: Address::new("127.0.0.1", port),
            scope,
            renewed: Instant::now(),
        }
    }

    fn keys(reply: &Reply) -> Vec<String> {
        let Reply::Map(pairs) = reply else {
            panic!("not a map: {reply:?}")
        };
        pairs
            .iter()
            .map(|(k, _)| match k {
                Reply::Bulk(k) => String::from_utf8_lossy(k).into_owned(),
                other => panic!("key {other:?}"),
            })
            .collect()
    }

    #[test]
    fn valkey_names_are_aliases() {
        let (c, mut s) = (catalog(), Session::new(1, false));
        for (valkey, redis) in [
            (
                "SENTINEL get-primary-addr-by-name ns.cache",
                "SENTINEL get-master-addr-by-name ns.cache",
            ),
            ("SENTINEL primary ns.cache", "SENTINEL master ns.cache"),
            ("SENTINEL PRIMARIES", "SENTINEL masters"),
            ("SENTINEL replicas ns.cache", "SENTINEL slaves ns.cache"),
        ] {
            assert_eq!(one(&mut s, &c, valkey), one(&mut s, &c, redis), "{valkey}");
        }
        assert_eq!(
            one(&mut s, &c, "SENTINEL primary"),
            Reply::error("ERR wrong number of arguments for 'sentinel|primary' command")
        );
    }

    /// The field names, in order, of `redis-sentinel` 7.0.15 for a healthy set (the e2e test
    /// `discovery_replies_have_the_shapes_of_a_real_sentinel` checks them against the real one).
    #[test]
    fn fields_are_those_of_redis_sentinel_in_its_order() {
        let (c, mut s) = (catalog(), Session::new(1, false));
        let peers = [peer("b".repeat(40).as_str(), 26380, Scope::All)];
        let master = execute_with(&mut s, &c, None, &peers, "SENTINEL master ns.cache").0;
        assert_eq!(
            keys(&master[0]),
            [
                "name",
                "ip",
                "port",
                "runid",
                "flags",
                "link-pending-commands",
                "link-refcount",
                "last-ping-sent",
                "last-ok-ping-reply",
                "last-ping-reply",
                "down-after-milliseconds",
                "info-refresh",
                "role-reported",
                "role-reported-time",
                "config-epoch",
                "num-slaves",
                "num-other-sentinels",
                "quorum",
                "failover-timeout",
                "parallel-syncs",
            ]
        );
        let Reply::Array(replicas) = one(&mut s, &c, "SENTINEL replicas ns.cache") else {
            panic!("array")
        };
        assert_eq!(
            keys(&replicas[0]),
            [
                "name",
                "ip",
                "port",
                "runid",
                "flags",
                "link-pending-commands",
                "link-refcount",
                "last-ping-sent",
                "last-ok-ping-reply",
                "last-ping-reply",
                "down-after-milliseconds",
                "info-refresh",
                "role-reported",
                "role-reported-time",
                "master-link-down-time",
                "master-link-status",
                "master-host",
                "master-port",
                "slave-priority",
                "slave-repl-offset",
                "replica-announced",
            ]
        );
        let Reply::Array(sentinels) =
            execute_with(&mut s, &c, None, &peers, "SENTINEL sentinels ns.cache")
                .0
                .remove(0)
        else {
            panic!("array")
        };
        assert_eq!(
            keys(&sentinels[0]),
            [
                "name",
                "ip",
                "port",
                "runid",
                "flags",
                "link-pending-commands",
                "link-refcount",
                "last-ping-sent",
                "last-ok-ping-reply",
                "last-ping-reply",
                "down-after-milliseconds",
                "last-hello-message",
                "voted-leader",
                "voted-leader-epoch",
            ]
        );
        assert_eq!(field(&sentinels[0], "name"), Some("b".repeat(40)));
        assert_eq!(field(&sentinels[0], "runid"), Some("b".repeat(40)));
        assert_eq!(field(&sentinels[0], "port").as_deref(), Some("26380"));
    }

    #[test]
    fn sentinels_lists_the_peers_serving_the_master_and_they_count_for_the_quorum() {
        let (c, mut s) = (catalog(), Session::new(1, false));
        let peers = [
            peer("a", 26380, Scope::All),
            peer("b", 26381, Scope::Namespace("ns".into())),
            peer("c", 26382, Scope::Namespace("elsewhere".into())),
        ];
        let run = |s: &mut Session, line: &str| execute_with(s, &c, None, &peers, line).0.remove(0);
        let Reply::Array(listed) = run(&mut s, "SENTINEL sentinels ns.cache") else {
            panic!("array")
        };
        let names: Vec<Option<String>> = listed.iter().map(|p| field(p, "name")).collect();
        assert_eq!(names, [Some("a".into()), Some("b".into())]);
        assert_eq!(
            field(
                &run(&mut s, "SENTINEL master ns.cache"),
                "num-other-sentinels"
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            run(&mut s, "SENTINEL ckquorum ns.cache"),
            Reply::Simple(
                "OK 3 usable Sentinels. Quorum and failover authorization can be reached".into()
            )
        );
        assert_eq!(
            one(&mut s, &c, "SENTINEL myid"),
            bulk("0123"),
            "its own run id, which it never lists"
        );
    }
}
