//! The commands of the Sentinel endpoint: one request, run in its connection's session against
//! the catalog, gives the replies. Pure: the server does the I/O. Replies and error texts are
//! those of Redis Sentinel, which clients parse.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::catalog::{Catalog, MasterView};
use super::events::Event;
use super::peers::Peer;
use super::resp::{Proto, Reply};
use super::{glob, sentinel};

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

/// Runnable before AUTH when a password is set. Not PING: Redis answers it NOAUTH too, which
/// is how a client learns that it must authenticate.
const NO_AUTH_COMMANDS: &[&str] = &["auth", "hello", "quit"];

/// What the server knows that commands read.
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    pub password: Option<&'a str>,
    /// This process's Sentinel run id (`SENTINEL MYID`).
    pub run_id: &'a str,
    /// The other operator replicas serving the endpoint (never this one).
    pub peers: &'a [Peer],
}

impl Context<'_> {
    /// The peers that answer for `view`'s master too.
    pub fn peers_of<'v>(&'v self, view: &'v MasterView) -> impl Iterator<Item = &'v Peer> {
        self.peers.iter().filter(|p| p.serves(&view.namespace))
    }
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
                    "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
                     QUIT / RESET are allowed in this context",
                    full_name(args)
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
            "sentinel" => sentinel::run(args, ctx),
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
        let channel = Bytes::from_static(event.channel.as_str().as_bytes());
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

/// `command|subcommand` for commands that have subcommands, as Redis names them in errors.
fn full_name(args: &[Bytes]) -> String {
    let command = lower(&args[0]);
    match (command.as_str(), args.get(1)) {
        ("sentinel" | "client", Some(sub)) => format!("{command}|{}", lower(sub)),
        _ => command,
    }
}

pub(super) fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

pub(super) fn arity(command: &str) -> Reply {
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
pub(crate) mod tests {
    use super::super::catalog::tests::replication;
    use super::super::events::Channel;
    use super::*;

    pub fn catalog() -> Catalog {
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
    pub fn execute(
        session: &mut Session,
        catalog: &Catalog,
        password: Option<&str>,
        line: &str,
    ) -> (Vec<Reply>, After) {
        execute_with(session, catalog, password, &[], line)
    }

    /// Runs `line` with `peers` serving the endpoint too.
    pub fn execute_with(
        session: &mut Session,
        catalog: &Catalog,
        password: Option<&str>,
        peers: &[Peer],
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
            peers,
        };
        session.execute(&args, &ctx)
    }

    pub fn run(
        session: &mut Session,
        catalog: &Catalog,
        password: Option<&str>,
        line: &str,
    ) -> Vec<Reply> {
        execute(session, catalog, password, line).0
    }

    pub fn one(session: &mut Session, catalog: &Catalog, line: &str) -> Reply {
        let mut replies = run(session, catalog, None, line);
        assert_eq!(replies.len(), 1, "{line}: {replies:?}");
        replies.remove(0)
    }

    pub fn field(reply: &Reply, name: &str) -> Option<String> {
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

    pub fn bulk(s: &str) -> Reply {
        Reply::bulk(s.to_string())
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
    fn with_a_password_only_auth_hello_and_quit_run_before_authenticating() {
        let (c, mut s) = (catalog(), Session::new(1, true));
        let pw = Some("s3cret");
        let noauth = Reply::error("NOAUTH Authentication required.");
        assert_eq!(
            run(&mut s, &c, pw, "SENTINEL masters"),
            std::slice::from_ref(&noauth)
        );
        assert_eq!(
            run(&mut s, &c, pw, "SUBSCRIBE +switch-master"),
            std::slice::from_ref(&noauth)
        );
        assert_eq!(
            run(&mut s, &c, pw, "PING"),
            [noauth],
            "as Redis: PING needs AUTH too"
        );
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
            Reply::Error(m) if m.starts_with("ERR Can't execute 'sentinel|masters': only (P|S)SUBSCRIBE")
        ));
        let event = Event {
            channel: Channel::SwitchMaster,
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
