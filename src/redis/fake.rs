//! A scripted stand-in for a Redis instance, for unit tests of what the operator sends: it
//! records every command (in one log shared by several fakes, so their order is known) and
//! answers each with what the test's script says.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::Address;

/// Every command the fakes received, as "<fake>: WORDS", in arrival order.
pub type Log = Arc<Mutex<Vec<String>>>;

/// What a fake answers to a command (its words), given what it received so far.
pub type Script = Box<dyn FnMut(&[String]) -> Reply + Send>;

pub enum Reply {
    Ok,
    Bulk(String),
}

/// Starts a fake named `name` on a free loopback port; it serves until the test ends.
pub async fn start(name: &str, log: Log, mut script: Script) -> Address {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let name = name.to_string();
    tokio::spawn(async move {
        // One connection at a time is enough for the tests: the operator's clients are
        // sequential.
        while let Ok((stream, _)) = listener.accept().await {
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            // Commands queued since MULTI, while in a transaction.
            let mut queued: Option<usize> = None;
            while let Some(words) = read_command(&mut read).await {
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("{name}: {}", words.join(" ")));
                let first = words.first().map(|w| w.to_ascii_uppercase());
                let reply = match (first.as_deref(), queued) {
                    (Some("MULTI"), _) => {
                        queued = Some(0);
                        "+OK\r\n".to_string()
                    }
                    (Some("EXEC"), Some(n)) => {
                        queued = None;
                        format!("*{n}\r\n{}", "+OK\r\n".repeat(n))
                    }
                    (_, Some(n)) => {
                        queued = Some(n + 1);
                        "+QUEUED\r\n".to_string()
                    }
                    _ => match script(&words) {
                        Reply::Ok => "+OK\r\n".to_string(),
                        Reply::Bulk(text) => format!("${}\r\n{text}\r\n", text.len()),
                    },
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
    Address::new("127.0.0.1", port)
}

/// One RESP array of bulk strings (what clients send), or None at the end of the stream.
async fn read_command<R: AsyncBufReadExt + AsyncReadExt + Unpin>(r: &mut R) -> Option<Vec<String>> {
    let header = read_line(r).await?;
    let n: usize = header.strip_prefix('*')?.parse().ok()?;
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        let len: usize = read_line(r).await?.strip_prefix('$')?.parse().ok()?;
        let mut buf = vec![0; len + 2];
        r.read_exact(&mut buf).await.ok()?;
        buf.truncate(len);
        words.push(String::from_utf8(buf).ok()?);
    }
    Some(words)
}

async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Option<String> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    Some(line.trim_end().to_string())
}

/// `INFO replication` of a master at `offset`.
pub fn master_info(offset: i64) -> String {
    format!("# Replication\r\nrole:master\r\nmaster_replid:r\r\nmaster_repl_offset:{offset}\r\n")
}

/// `INFO replication` of a linked replica of `master` at `offset`.
pub fn replica_info(master: &Address, offset: i64) -> String {
    format!(
        "# Replication\r\nrole:slave\r\nmaster_host:{}\r\nmaster_port:{}\r\n\
         master_link_status:up\r\nmaster_sync_in_progress:0\r\nmaster_replid:r\r\n\
         master_repl_offset:{offset}\r\n",
        master.host, master.port
    )
}
