//! A snapshot read over the replication protocol, the way a new replica receives one: the
//! instance forks and streams its RDB to us (diskless), and we pass it on chunk by chunk, so the
//! backup never needs disk for a copy. `REPLCONF rdb-only` (as `redis-cli --rdb` sends) tells
//! the instance not to keep us as a replica after the RDB.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The end marker of a diskless transfer is this long (`$EOF:<mark>`).
const MARK_LEN: usize = 40;

/// How long the stream may stay silent. While it forks, the instance sends a newline every
/// second, so a minute of nothing is a dead connection.
const IDLE: Duration = Duration::from_secs(60);

/// How long a reply to one of our commands may take: an instance that answers nothing within
/// this (a frozen master) is given up on, and the attempt retried from the current topology.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read this much at a time at most.
const READ_SIZE: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the instance sent nothing for {0:?}")]
    Idle(Duration),
    #[error("the instance closed the connection {0}")]
    Closed(&'static str),
    #[error("the instance refused {command}: {reply}")]
    Refused {
        command: &'static str,
        reply: String,
    },
    #[error("unexpected reply to {command}: {reply:?}")]
    Protocol {
        command: &'static str,
        reply: String,
    },
}

/// How the RDB's end is known.
enum Body {
    /// `$<len>`: this many bytes are still to come.
    Length(u64),
    /// `$EOF:<mark>`: the RDB ends with `mark`; the last `MARK_LEN` bytes read are held back
    /// until we know they are not it.
    Marked([u8; MARK_LEN]),
    Done,
}

/// A full synchronisation in progress.
pub struct Snapshot<S> {
    stream: S,
    buf: BytesMut,
    body: Body,
    /// The replication id and offset the RDB holds (`+FULLRESYNC <id> <offset>`).
    pub replication_id: String,
    pub offset: i64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Snapshot<S> {
    /// Authenticates on `stream`, asks for a full synchronisation and reads up to the RDB's
    /// first byte.
    pub async fn start(mut stream: S, password: Option<&str>) -> Result<Self, Error> {
        let mut buf = BytesMut::new();
        if let Some(password) = password {
            let reply = command(&mut stream, &mut buf, "AUTH", &["AUTH", password]).await?;
            expect_ok("AUTH", reply)?;
        }
        let reply = command(
            &mut stream,
            &mut buf,
            "REPLCONF rdb-only",
            &["REPLCONF", "rdb-only", "1"],
        )
        .await?;
        // Older servers do not know rdb-only: they go on to stream writes after the RDB, which
        // we never read.
        if !reply.starts_with('+') && !reply.starts_with('-') {
            return Err(Error::Protocol {
                command: "REPLCONF rdb-only",
                reply,
            });
        }
        let capa = ["REPLCONF", "capa", "eof"];
        let reply = command(&mut stream, &mut buf, "REPLCONF capa", &capa).await?;
        expect_ok("REPLCONF capa", reply)?;
        let reply = command(&mut stream, &mut buf, "PSYNC", &["PSYNC", "?", "-1"]).await?;
        let (replication_id, offset) = parse_fullresync(&reply)?;
        let header = read_line(&mut stream, &mut buf, "PSYNC").await?;
        let body = parse_header(&header)?;
        Ok(Self {
            stream,
            buf,
            body,
            replication_id,
            offset,
        })
    }

    /// The next bytes of the RDB; `None` once it is complete. An error means the snapshot is
    /// incomplete and must not be used.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            match &mut self.body {
                Body::Done => return Ok(None),
                Body::Length(0) => {
                    self.body = Body::Done;
                    return Ok(None);
                }
                Body::Length(remaining) => {
                    if self.buf.is_empty() {
                        fill(&mut self.stream, &mut self.buf, "during the RDB", IDLE).await?;
                    }
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    *remaining -= take as u64;
                    return Ok(Some(self.buf.split_to(take).freeze()));
                }
                Body::Marked(mark) => {
                    if self.buf.len() >= MARK_LEN && self.buf.ends_with(mark) {
                        let data = self.buf.split_to(self.buf.len() - MARK_LEN).freeze();
                        self.buf.clear();
                        self.body = Body::Done;
                        return Ok(Some(data));
                    }
                    if self.buf.len() > MARK_LEN * 2 {
                        let ready = self.buf.len() - MARK_LEN;
                        return Ok(Some(self.buf.split_to(ready).freeze()));
                    }
                    fill(
                        &mut self.stream,
                        &mut self.buf,
                        "before the RDB's end marker",
                        IDLE,
                    )
                    .await?;
                }
            }
        }
    }
}

/// Sends one command, returns its one-line reply.
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    name: &'static str,
    args: &[&str],
) -> Result<String, Error> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    stream.write_all(&cmd.get_packed_command()).await?;
    stream.flush().await?;
    read_line(stream, buf, name).await
}

fn expect_ok(command: &'static str, reply: String) -> Result<(), Error> {
    match reply.as_bytes().first() {
        Some(b'+') => Ok(()),
        Some(b'-') => Err(Error::Refused { command, reply }),
        _ => Err(Error::Protocol { command, reply }),
    }
}

/// One `\r\n`-terminated line, skipping the bare newlines an instance sends as keepalives.
async fn read_line<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    command: &'static str,
) -> Result<String, Error> {
    loop {
        while buf.first() == Some(&b'\n') {
            buf.advance(1);
        }
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 2);
            return Ok(line);
        }
        if buf.len() > 64 * 1024 {
            return Err(Error::Protocol {
                command,
                reply: "a reply line longer than 64 KiB".into(),
            });
        }
        fill(stream, buf, "before answering", REPLY_TIMEOUT).await?;
    }
}

async fn fill<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    when: &'static str,
    idle: Duration,
) -> Result<(), Error> {
    buf.reserve(READ_SIZE);
    match tokio::time::timeout(idle, stream.read_buf(buf)).await {
        Err(_) => Err(Error::Idle(idle)),
        Ok(Ok(0)) => Err(Error::Closed(when)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Io(e)),
    }
}

fn parse_fullresync(reply: &str) -> Result<(String, i64), Error> {
    if reply.starts_with('-') {
        return Err(Error::Refused {
            command: "PSYNC",
            reply: reply.to_string(),
        });
    }
    let mut parts = reply.split(' ');
    match (parts.next(), parts.next(), parts.next().map(str::parse)) {
        (Some("+FULLRESYNC"), Some(id), Some(Ok(offset))) if !id.is_empty() => {
            Ok((id.to_string(), offset))
        }
        _ => Err(Error::Protocol {
            command: "PSYNC",
            reply: reply.to_string(),
        }),
    }
}

fn parse_header(header: &str) -> Result<Body, Error> {
    let protocol = || Error::Protocol {
        command: "PSYNC",
        reply: header.to_string(),
    };
    if header.starts_with('-') {
        return Err(Error::Refused {
            command: "PSYNC",
            reply: header.to_string(),
        });
    }
    let bulk = header.strip_prefix('$').ok_or_else(protocol)?;
    if let Some(mark) = bulk.strip_prefix("EOF:") {
        let mark: [u8; MARK_LEN] = mark.as_bytes().try_into().map_err(|_| protocol())?;
        return Ok(Body::Marked(mark));
    }
    bulk.parse().map(Body::Length).map_err(|_| protocol())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &str = "0123456789abcdef0123456789abcdef01234567";

    /// Plays an instance's side: checks the commands, answers, then streams `rdb` in `pieces`.
    async fn serve(header: String, rdb: Vec<u8>, trailer: Vec<u8>) -> Result<Vec<u8>, Error> {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let instance = tokio::spawn(async move {
            let mut seen = Vec::new();
            let replies = [
                "+OK\r\n".to_string(),
                "-ERR unknown option rdb-only\r\n".to_string(),
                "+OK\r\n".to_string(),
                format!(
                    "+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 4242\r\n\n\n{header}\r\n"
                ),
            ]
            .into_iter();
            let mut buf = [0u8; 4096];
            for reply in replies {
                let n = theirs.read(&mut buf).await.expect("read a command");
                seen.extend_from_slice(&buf[..n]);
                theirs.write_all(reply.as_bytes()).await.expect("reply");
            }
            for piece in rdb.chunks(7).chain([trailer.as_slice()]) {
                theirs.write_all(piece).await.expect("stream");
            }
            String::from_utf8_lossy(&seen).into_owned()
        });
        let mut snapshot = Snapshot::start(ours, Some("secret")).await?;
        assert_eq!(snapshot.offset, 4242);
        assert_eq!(
            snapshot.replication_id,
            "8de1787ba490483314a4d30f1c628bc5025eb761"
        );
        let mut got = Vec::new();
        while let Some(chunk) = snapshot.next_chunk().await? {
            got.extend_from_slice(&chunk);
        }
        let seen = instance.await.expect("instance side");
        for part in ["AUTH", "secret", "rdb-only", "capa", "eof", "PSYNC", "-1"] {
            assert!(seen.contains(part), "{part} not sent: {seen:?}");
        }
        Ok(got)
    }

    fn rdb() -> Vec<u8> {
        (0..1000u32).flat_map(|i| i.to_le_bytes()).collect()
    }

    #[tokio::test]
    async fn a_diskless_rdb_ends_at_its_marker() {
        let got = serve(format!("$EOF:{MARK}"), rdb(), MARK.as_bytes().to_vec())
            .await
            .expect("snapshot");
        assert_eq!(got, rdb());
    }

    #[tokio::test]
    async fn a_disk_rdb_ends_after_its_length() {
        let got = serve(
            format!("${}", rdb().len()),
            rdb(),
            b"*1\r\n$4\r\nPING\r\n".to_vec(),
        )
        .await
        .expect("snapshot");
        assert_eq!(
            got,
            rdb(),
            "the replication stream after the RDB is not part of it"
        );
    }

    #[tokio::test]
    async fn a_stream_cut_before_the_marker_is_an_error() {
        let err = serve(format!("$EOF:{MARK}"), rdb(), Vec::new())
            .await
            .expect_err("incomplete");
        assert!(matches!(err, Error::Closed(_)), "{err}");
    }

    #[test]
    fn refusals_and_garbage_are_told_apart() {
        assert!(matches!(
            parse_fullresync("-NOMASTERLINK Can't SYNC while not connected with my master"),
            Err(Error::Refused { .. })
        ));
        assert!(matches!(
            parse_fullresync("+CONTINUE"),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            parse_header("$EOF:short"),
            Err(Error::Protocol { .. })
        ));
    }
}
