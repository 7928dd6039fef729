//! The commands of the Sentinel endpoint: one request, run in its connection's session against
//! the catalog, gives the replies. Pure: the server does the I/O. Replies and error texts are
//! those of Redis Sentinel, which clients parse.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::catalog::{Catalog, Event, MasterView, ReplicaView};
use super::glob;
use super::resp::{Proto, Reply};
use crate::redis::Address;

/// The Redis version HELLO reports: the Sentinel behaviour this endpoint follows.
const REDIS_VERSION: &str = "7.2.0";

/// Commands that exist here; anything else is an unknown command, as in Sentinel.
const COMMANDS: &[&str] = &[
    "auth",
    "client",
    "hello",
    "ping",
    "psubscribe",
    "punsubscribe",
    "quit",
    "role",
    "sentinel",
    "subscribe",
    "unsubscribe",
];

/// What a RESP2 connection may still run while subscribed.
const PUBSUB_COMMANDS: &[&str] = &[
    "ping",
    "psubscribe",
    "punsubscribe",
    "quit",
    "subscribe",
    "unsubscribe",
];

/// Runnable before AUTH when a password is set.
const NO_AUTH_COMMANDS: &[&str] = &["auth", "hello", "ping", "quit"];

/// What the server knows that commands read.
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    pub password: Option<&'a str>,
    /// This process's Sentinel run id (`SENTINEL MYID`).
    pub run_id: &'a str,
}

/// Whether the connection goes on after the replies are written.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    Close,
}

/// The state of one client connection.
pub struct Session {
    id: u64,
    pub proto: Proto,
    authenticated: bool,
    name: Option<Bytes>,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
}

impl Session {
    pub fn new(id: u64, password_required: bool) -> Self {
        Self {
            id,
            proto: Proto::Resp2,
            authenticated: !password_required,
            name: None,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
        }
    }

    pub fn subscribed(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty()
    }

    /// Runs one request (`args[0]` is the command).
    pub fn execute(&mut self, args: &[Bytes], ctx: &Context<'_>) -> (Vec<Reply>, After) {
        let Some(first) = args.first() else {
            return (Vec::new(), After::Continue);
        };
        let command = lower(first);
        if !COMMANDS.contains(&command.as_str()) {
            return (vec![unknown_command(args)], After::Continue);
        }
        if !self.authenticated && !NO_AUTH_COMMANDS.contains(&command.as_str()) {
            return (
                vec![Reply::error("NOAUTH Authentication required.")],
                After::Continue,
            );
        }
        if self.subscribed()
            && self.proto == Proto::Resp2
            && !PUBSUB_COMMANDS.contains(&command.as_str())
        {
            return (
                vec![Reply::error(format!(
                    "ERR Can't execute '{command}': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING \
                     / QUIT are allowed in this context"
                ))],
                After::Continue,
            );
        }
        let reply = match command.as_str() {
            "ping" => self.ping(args),
            "auth" => self.auth(args, ctx),
            "hello" => self.hello(args, ctx),
            "client" => self.client(args),
            "quit" => return (vec![Reply::ok()], After::Close),
            "role" if args.len() == 1 => Reply::Array(vec![
                Reply::bulk("sentinel"),
                Reply::Array(
                    ctx.catalog
                        .masters()
                        .iter()
                        .map(|(view, _)| Reply::bulk(view.name.clone()))
                        .collect(),
                ),
            ]),
            "sentinel" => sentinel(args, ctx),
            "subscribe" | "psubscribe" if args.len() >= 2 => {
                return (self.subscribe(&command, &args[1..]), After::Continue);
            }
            "unsubscribe" | "punsubscribe" => {
                return (self.unsubscribe(&command, &args[1..]), After::Continue);
            }
            _ => arity(&command),
        };
        (vec![reply], After::Continue)
    }

    /// The pub/sub messages `event` means for this session.
    pub fn deliver(&self, event: &Event) -> Vec<Reply> {
        let channel = Bytes::from_static(event.channel.as_bytes());
        let payload = Reply::bulk(event.payload.clone());
        let mut replies = Vec::new();
        if self.channels.contains(&channel) {
            replies.push(Reply::Push(vec![
                Reply::bulk("message"),
                Reply::Bulk(channel.clone()),
                payload.clone(),
            ]));
        }
        for pattern in &self.patterns {
            if glob::matches(pattern, &channel) {
                replies.push(Reply::Push(vec![
                    Reply::bulk("pmessage"),
                    Reply::Bulk(pattern.clone()),
                    Reply::Bulk(channel.clone()),
                    payload.clone(),
                ]));
            }
        }
        replies
    }

    fn ping(&self, args: &[Bytes]) -> Reply {
        if args.len() > 2 {
            return arity("ping");
        }
        let message = args.get(1).cloned();
        if self.subscribed() && self.proto == Proto::Resp2 {
            return Reply::Array(vec![
                Reply::bulk("pong"),
                Reply::Bulk(message.unwrap_or_default()),
            ]);
        }
        match message {
            Some(m) => Reply::Bulk(m),
            None => Reply::Simple("PONG".into()),
        }
    }

    fn auth(&mut self, args: &[Bytes], ctx: &Context<'_>) -> Reply {
        let (user, password) = match args {
            [_, password] => (None, password),
            [_, user, password] => (Some(user.as_ref()), password),
            _ => return arity("auth"),
        };
        match check_credentials(ctx.password, user, password) {
            Ok(()) => {
                self.authenticated = true;
                Reply::ok()
            }
            Err(reply) => reply,
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`: RESP3 for clients that ask for it
    /// (redis-py 8 and go-redis 9 do by default and need it to connect).
    fn hello(&mut self, args: &[Bytes], ctx: &Context<'_>) -> Reply {
        let proto = match args
            .get(1)
            .map(|v| std::str::from_utf8(v).map(str::parse::<i64>))
        {
            None => self.proto,
            Some(Ok(Ok(2))) => Proto::Resp2,
            Some(Ok(Ok(3))) => Proto::Resp3,
            Some(Ok(Ok(_))) => return Reply::error("NOPROTO unsupported protocol version"),
            Some(_) => {
                return Reply::error("ERR Protocol version is not an integer or out of range");
            }
        };
        let (mut credentials, mut name) = (None, None);
        let mut i = 2;
        while i < args.len() {
            let option = lower(&args[i]);
            match option.as_str() {
                "auth" if i + 2 < args.len() => {
                    credentials = Some((&args[i + 1], &args[i + 2]));
                    i += 3;
                }
                "setname" if i + 1 < args.len() => {
                    name = Some(args[i + 1].clone());
                    i += 2;
                }
                _ => {
                    return Reply::error(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(&args[i])
                    ));
                }
            }
        }
        let mut authenticated = self.authenticated;
        if let Some((user, password)) = credentials {
            if let Err(reply) = check_credentials(ctx.password, Some(user), password) {
                return reply;
            }
            authenticated = true;
        }
        if !authenticated {
            return Reply::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO AUTH <user> <pass> option can be used to authenticate the client and \
                 select the RESP protocol version at the same time",
            );
        }
        if let Some(name) = &name
            && !valid_attribute(name)
        {
            return bad_client_name();
        }
        self.authenticated = authenticated;
        self.proto = proto;
        if name.is_some() {
            self.name = name.filter(|n| !n.is_empty());
        }
        Reply::Map(vec![
            (Reply::bulk("server"), Reply::bulk("redis")),
            (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
            (Reply::bulk("proto"), Reply::Int(proto.version())),
            (
                Reply::bulk("id"),
                Reply::Int(i64::try_from(self.id).unwrap_or(i64::MAX)),
            ),
            (Reply::bulk("mode"), Reply::bulk("sentinel")),
            (Reply::bulk("modules"), Reply::Array(Vec::new())),
        ])
    }

    fn client(&mut self, args: &[Bytes]) -> Reply {
        let Some(sub) = args.get(1) else {
            return arity("client");
        };
        let name = lower(sub);
        match (name.as_str(), args) {
            ("setname", [_, _, client_name]) => {
                if !valid_attribute(client_name) {
                    return bad_client_name();
                }
                self.name = Some(client_name.clone()).filter(|n| !n.is_empty());
                Reply::ok()
            }
            ("getname", [_, _]) => self.name.clone().map_or(Reply::Null, Reply::Bulk),
            ("setinfo", [_, _, attribute, value]) => {
                let attribute = lower(attribute);
                if attribute != "lib-name" && attribute != "lib-ver" {
                    Reply::error(format!("ERR Unrecognized option '{attribute}'"))
                } else if !valid_attribute(value) {
                    Reply::error(format!(
                        "ERR {attribute} cannot contain spaces, newlines or special characters."
                    ))
                } else {
                    Reply::ok()
                }
            }
            ("setname" | "getname" | "setinfo", _) => arity(&format!("client|{name}")),
            _ => Reply::error(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(sub)
            )),
        }
    }

    /// The channels (SUBSCRIBE, UNSUBSCRIBE) or the patterns (PSUBSCRIBE, PUNSUBSCRIBE).
    fn subscriptions(&mut self, command: &str) -> &mut BTreeSet<Bytes> {
        match command {
            "psubscribe" | "punsubscribe" => &mut self.patterns,
            _ => &mut self.channels,
        }
    }

    /// The reply confirming one (un)subscription, with the count after it.
    fn confirmation(&self, command: &str, target: Reply) -> Reply {
        let count = self.channels.len() + self.patterns.len();
        Reply::Push(vec![
            Reply::bulk(command.to_string()),
            target,
            Reply::Int(i64::try_from(count).unwrap_or(i64::MAX)),
        ])
    }

    fn subscribe(&mut self, command: &str, targets: &[Bytes]) -> Vec<Reply> {
        targets
            .iter()
            .map(|target| {
                self.subscriptions(command).insert(target.clone());
                self.confirmation(command, Reply::Bulk(target.clone()))
            })
            .collect()
    }

    /// Without arguments, from everything; with none to leave, one reply with a null target.
    fn unsubscribe(&mut self, command: &str, targets: &[Bytes]) -> Vec<Reply> {
        let targets: Vec<Bytes> = if targets.is_empty() {
            self.subscriptions(command).iter().cloned().collect()
        } else {
            targets.to_vec()
        };
        if targets.is_empty() {
            return vec![self.confirmation(command, Reply::Null)];
        }
        targets
            .into_iter()
            .map(|target| {
                self.subscriptions(command).remove(&target);
                self.confirmation(command, Reply::Bulk(target))
            })
            .collect()
    }
}

fn sentinel(args: &[Bytes], ctx: &Context<'_>) -> Reply {
    let Some(sub) = args.get(1) else {
        return arity("sentinel");
    };
    let name = lower(sub);
    let expected = match name.as_str() {
        "masters" | "myid" => 2,
        "master" | "replicas" | "slaves" | "sentinels" | "get-master-addr-by-name" | "ckquorum" => {
            3
        }
        "failover" => {
            return Reply::error(
                "ERR vigil fails over by itself when a master fails; delete the master pod for \
                 a planned switchover",
            );
        }
        _ => {
            return Reply::error(format!(
                "ERR unknown subcommand '{}'. Try SENTINEL HELP.",
                String::from_utf8_lossy(sub)
            ));
        }
    };
    if args.len() != expected {
        return arity(&format!("sentinel|{name}"));
    }
    match name.as_str() {
        "masters" => Reply::Array(
            ctx.catalog
                .masters()
                .into_iter()
                .map(|(view, address)| master(view, address))
                .collect(),
        ),
        "myid" => Reply::bulk(ctx.run_id.to_string()),
        _ => {
            let found = ctx.catalog.get(&String::from_utf8_lossy(&args[2]));
            match (name.as_str(), found) {
                ("get-master-addr-by-name", None) => Reply::NullArray,
                (_, None) => Reply::error("ERR No such master with that name"),
                ("get-master-addr-by-name", Some((_, address))) => Reply::Array(vec![
                    Reply::bulk(address.host.clone()),
                    Reply::bulk(address.port.to_string()),
                ]),
                ("master", Some((view, address))) => master(view, address),
                ("replicas" | "slaves", Some((view, address))) => {
                    Reply::Array(view.replicas.iter().map(|r| replica(address, r)).collect())
                }
                // The operator is the only Sentinel: it has no peers, and alone it is a quorum.
                ("sentinels", Some(_)) => Reply::Array(Vec::new()),
                _ => Reply::Simple(
                    "OK 1 usable Sentinels. Quorum and failover authorization can be reached"
                        .into(),
                ),
            }
        }
    }
}

/// `SENTINEL MASTER`: the fields Sentinel reports that the status can back.
fn master(view: &MasterView, address: &Address) -> Reply {
    let mut flags = Vec::new();
    if view.down {
        flags.push("s_down");
    }
    flags.push("master");
    if view.failing_over {
        flags.push("failover_in_progress");
    }
    Reply::fields([
        ("name", view.name.clone()),
        ("ip", address.host.clone()),
        ("port", address.port.to_string()),
        ("runid", String::new()),
        ("flags", flags.join(",")),
        (
            "down-after-milliseconds",
            view.down_after_milliseconds.to_string(),
        ),
        ("role-reported", "master".into()),
        ("config-epoch", view.epoch.to_string()),
        ("num-slaves", view.replicas.len().to_string()),
        ("num-other-sentinels", "0".into()),
        ("quorum", "1".into()),
    ])
}

/// One entry of `SENTINEL REPLICAS`; clients skip those flagged down or disconnected.
fn replica(master: &Address, r: &ReplicaView) -> Reply {
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
    Reply::fields([
        ("name", r.address.to_string()),
        ("ip", r.address.host.clone()),
        ("port", r.address.port.to_string()),
        ("runid", String::new()),
        ("flags", flags.into()),
        ("role-reported", "slave".into()),
        (
            "master-link-status",
            if r.link_up { "ok" } else { "err" }.into(),
        ),
        ("master-host", master_host),
        ("master-port", master_port),
        ("slave-repl-offset", r.offset.to_string()),
        ("replica-announced", "1".into()),
    ])
}

fn check_credentials(
    configured: Option<&str>,
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<(), Reply> {
    let default_user = user.is_none_or(|u| u == b"default");
    let ok = match configured {
        // Like a Redis without a password: only the default user exists, with no password.
        None if user.is_none() => {
            return Err(Reply::error(
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            ));
        }
        None => default_user,
        Some(expected) => default_user && same_secret(password, expected.as_bytes()),
    };
    if ok {
        Ok(())
    } else {
        Err(Reply::error(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ))
    }
}

/// Compares in time independent of where the inputs differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Client names and library attributes: printable, no spaces (Redis's rule).
fn valid_attribute(value: &[u8]) -> bool {
    value.iter().all(|c| (b'!'..=b'~').contains(c))
}

fn bad_client_name() -> Reply {
    Reply::error("ERR Client names cannot contain spaces, newlines or special characters.")
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

fn arity(command: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{command}' command"
    ))
}

/// Redis's wording, listing the first arguments up to 128 characters.
fn unknown_command(args: &[Bytes]) -> Reply {
    let mut listed = String::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let arg: String = String::from_utf8_lossy(arg).chars().take(128).collect();
        listed.push_str(&format!("'{arg}' "));
    }
    let name: String = String::from_utf8_lossy(&args[0])
        .chars()
        .take(128)
        .collect();
    Reply::error(format!(
        "ERR unknown command '{name}', with args beginning with: {listed}"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::catalog::tests::replication;
    use super::*;

    fn catalog() -> Catalog {
        let mut catalog = Catalog::default();
        catalog.apply(&replication(
            "ns",
            "cache",
            Some(1),
            &[
                (1, "master", true),
                (2, "replica", true),
                (3, "fenced", false),
            ],
        ));
        catalog
    }

    /// Runs `line` (arguments separated by single spaces).
    fn execute(
        session: &mut Session,
        catalog: &Catalog,
        password: Option<&str>,
        line: &str,
    ) -> (Vec<Reply>, After) {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|a| Bytes::from(a.to_string()))
            .collect();
        let ctx = Context {
            catalog,
            password,
            run_id: "0123",
        };
        session.execute(&args, &ctx)
    }

    fn run(
        session: &mut Session,
        catalog: &Catalog,
        password: Option<&str>,
        line: &str,
    ) -> Vec<Reply> {
        execute(session, catalog, password, line).0
    }

    fn one(session: &mut Session, catalog: &Catalog, line: &str) -> Reply {
        let mut replies = run(session, catalog, None, line);
        assert_eq!(replies.len(), 1, "{line}: {replies:?}");
        replies.remove(0)
    }

    fn field(reply: &Reply, name: &str) -> Option<String> {
        let Reply::Map(pairs) = reply else {
            panic!("not a map: {reply:?}")
        };
        pairs.iter().find_map(|(k, v)| match (k, v) {
            (Reply::Bulk(k), Reply::Bulk(v)) if k == name => {
                Some(String::from_utf8_lossy(v).into_owned())
            }
            _ => None,
        })
    }

    fn bulk(s: &str) -> Reply {
        Reply::bulk(s.to_string())
    }

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

    #[test]
    fn hello_switches_to_resp3_and_refuses_other_versions_like_redis() {
        let (c, mut s) = (catalog(), Session::new(7, false));
        for (line, expected) in [
            ("HELLO 4", "NOPROTO unsupported protocol version"),
            (
                "HELLO x",
                "ERR Protocol version is not an integer or out of range",
            ),
            ("HELLO 3 foo", "ERR Syntax error in HELLO option 'foo'"),
        ] {
            assert_eq!(one(&mut s, &c, line), Reply::error(expected), "{line}");
        }
        assert_eq!(s.proto, Proto::Resp2);
        let hello = one(&mut s, &c, "HELLO 3 SETNAME app");
        assert_eq!(s.proto, Proto::Resp3);
        assert_eq!(field(&hello, "mode").as_deref(), Some("sentinel"));
        let Reply::Map(pairs) = &hello else { panic!() };
        assert!(pairs.contains(&(bulk("proto"), Reply::Int(3))));
        assert!(pairs.contains(&(bulk("id"), Reply::Int(7))));
        assert_eq!(one(&mut s, &c, "CLIENT GETNAME"), bulk("app"));
        one(&mut s, &c, "HELLO 2");
        assert_eq!(s.proto, Proto::Resp2);
    }

    #[test]
    fn with_a_password_only_auth_hello_ping_and_quit_run_before_authenticating() {
        let (c, mut s) = (catalog(), Session::new(1, true));
        let pw = Some("s3cret");
        let noauth = Reply::error("NOAUTH Authentication required.");
        assert_eq!(
            run(&mut s, &c, pw, "SENTINEL masters"),
            std::slice::from_ref(&noauth)
        );
        assert_eq!(run(&mut s, &c, pw, "SUBSCRIBE +switch-master"), [noauth]);
        assert_eq!(run(&mut s, &c, pw, "PING"), [Reply::Simple("PONG".into())]);
        assert!(matches!(
            &run(&mut s, &c, pw, "HELLO 3")[0],
            Reply::Error(m) if m.starts_with("NOAUTH HELLO must be called")
        ));
        let wrong = Reply::error("WRONGPASS invalid username-password pair or user is disabled.");
        assert_eq!(
            run(&mut s, &c, pw, "AUTH nope"),
            std::slice::from_ref(&wrong)
        );
        assert_eq!(
            run(&mut s, &c, pw, "AUTH bob s3cret"),
            std::slice::from_ref(&wrong)
        );
        assert_eq!(run(&mut s, &c, pw, "HELLO 3 AUTH default nope"), [wrong]);
        assert_eq!(s.proto, Proto::Resp2, "a failed HELLO changes nothing");
        assert_eq!(run(&mut s, &c, pw, "AUTH s3cret"), [Reply::ok()]);
        assert_eq!(
            run(&mut s, &c, pw, "SENTINEL sentinels ns.cache"),
            [Reply::Array(vec![])]
        );

        let mut other = Session::new(2, true);
        assert!(matches!(
            &run(&mut other, &c, pw, "HELLO 3 AUTH default s3cret")[0],
            Reply::Map(_)
        ));
        assert_eq!(other.proto, Proto::Resp3);

        let mut open = Session::new(3, false);
        assert!(matches!(
            &run(&mut open, &c, None, "AUTH x")[0],
            Reply::Error(m) if m.starts_with("ERR AUTH <password> called without any password")
        ));
        assert_eq!(run(&mut open, &c, None, "AUTH default x"), [Reply::ok()]);
    }

    #[test]
    fn subscriptions_follow_redis_pubsub_replies() {
        let (c, mut s) = (catalog(), Session::new(1, false));
        let push = |kind: &str, target: Reply, n: i64| {
            Reply::Push(vec![bulk(kind), target, Reply::Int(n)])
        };
        assert_eq!(
            run(&mut s, &c, None, "SUBSCRIBE +switch-master +sdown"),
            [
                push("subscribe", bulk("+switch-master"), 1),
                push("subscribe", bulk("+sdown"), 2)
            ]
        );
        assert_eq!(
            run(&mut s, &c, None, "PSUBSCRIBE *"),
            [push("psubscribe", bulk("*"), 3)]
        );
        assert_eq!(
            one(&mut s, &c, "PING"),
            Reply::Array(vec![bulk("pong"), bulk("")])
        );
        assert!(matches!(
            one(&mut s, &c, "SENTINEL masters"),
            Reply::Error(m) if m.starts_with("ERR Can't execute 'sentinel'")
        ));
        let event = Event {
            channel: "+switch-master",
            payload: "ns.cache 10.0.0.1 6379 10.0.0.2 6379".into(),
        };
        assert_eq!(
            s.deliver(&event),
            [
                Reply::Push(vec![
                    bulk("message"),
                    bulk("+switch-master"),
                    bulk("ns.cache 10.0.0.1 6379 10.0.0.2 6379")
                ]),
                Reply::Push(vec![
                    bulk("pmessage"),
                    bulk("*"),
                    bulk("+switch-master"),
                    bulk("ns.cache 10.0.0.1 6379 10.0.0.2 6379")
                ]),
            ]
        );
        assert_eq!(
            run(&mut s, &c, None, "UNSUBSCRIBE"),
            [
                push("unsubscribe", bulk("+sdown"), 2),
                push("unsubscribe", bulk("+switch-master"), 1)
            ]
        );
        assert_eq!(
            run(&mut s, &c, None, "UNSUBSCRIBE"),
            [push("unsubscribe", Reply::Null, 1)]
        );
        assert_eq!(
            run(&mut s, &c, None, "PUNSUBSCRIBE"),
            [push("punsubscribe", bulk("*"), 0)]
        );
        assert!(!s.subscribed());
        assert_eq!(one(&mut s, &c, "PING"), Reply::Simple("PONG".into()));
    }

    #[test]
    fn client_commands_quit_and_unknown_commands_answer_like_redis() {
        let (c, mut s) = (catalog(), Session::new(1, false));
        for (line, expected) in [
            ("CLIENT GETNAME", Reply::Null),
            ("CLIENT SETNAME app", Reply::ok()),
            ("CLIENT GETNAME", bulk("app")),
            ("CLIENT SETINFO LIB-NAME redis-py", Reply::ok()),
            (
                "CLIENT SETINFO color red",
                Reply::error("ERR Unrecognized option 'color'"),
            ),
            (
                "CLIENT KILL x",
                Reply::error("ERR unknown subcommand 'KILL'. Try CLIENT HELP."),
            ),
            (
                "GET a b",
                Reply::error("ERR unknown command 'GET', with args beginning with: 'a' 'b' "),
            ),
            (
                "SENTINEL monitor a b c d",
                Reply::error("ERR unknown subcommand 'monitor'. Try SENTINEL HELP."),
            ),
            ("PING hi", bulk("hi")),
        ] {
            assert_eq!(one(&mut s, &c, line), expected, "{line}");
        }
        assert_eq!(
            execute(&mut s, &c, None, "QUIT"),
            (vec![Reply::ok()], After::Close)
        );
    }
}
