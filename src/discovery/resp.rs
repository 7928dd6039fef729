//! The wire format, through the `redis-protocol` crate: requests are decoded with bounds on size,
//! argument count and nesting; replies are built once and encoded as RESP2 or RESP3, whichever
//! the connection negotiated with HELLO.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::{BytesFrame as Resp2Frame, RangeFrame};
use redis_protocol::resp3::types::{BytesFrame as Resp3Frame, FrameMap};
use tokio_util::codec::Decoder;

/// The protocol of a connection: RESP2 until the client asks for RESP3 with `HELLO 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Resp2,
    Resp3,
}

impl Proto {
    pub fn version(self) -> i64 {
        match self {
            Self::Resp2 => 2,
            Self::Resp3 => 3,
        }
    }
}

/// A reply, independent of the protocol it is encoded in.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Bytes),
    /// A null bulk string (RESP2 `$-1`).
    Null,
    /// A null array (RESP2 `*-1`), what Sentinel answers for an unknown master.
    NullArray,
    Array(Vec<Reply>),
    /// Field/value pairs: a flat array in RESP2, a map in RESP3.
    Map(Vec<(Reply, Reply)>),
    /// Pub/sub messages: an array in RESP2, a push in RESP3.
    Push(Vec<Reply>),
}

/// RESP2 has no null array frame in the codec; this is its whole encoding.
const RESP2_NULL_ARRAY: &[u8] = b"*-1\r\n";

impl Reply {
    pub fn ok() -> Self {
        Self::Simple("OK".into())
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self::Error(message.into())
    }

    pub fn bulk(text: impl Into<Bytes>) -> Self {
        Self::Bulk(text.into())
    }

    /// Field/value pairs whose values are all bulk strings, as Sentinel writes instance state.
    pub fn fields<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Self::bulk(k.into()), Self::bulk(v.into())))
                .collect(),
        )
    }

    /// Appends the encoding of this reply in `proto` to `buf`.
    pub fn encode(&self, proto: Proto, buf: &mut BytesMut) {
        // The frames built here are always valid, so the encoders cannot fail; a failure would
        // be a bug in the crate, answered with a generic error rather than a broken stream.
        let encoded = match (proto, self) {
            (Proto::Resp2, Self::NullArray) => {
                buf.extend_from_slice(RESP2_NULL_ARRAY);
                Ok(0)
            }
            (Proto::Resp2, reply) => {
                redis_protocol::resp2::encode::extend_encode(buf, &reply.resp2(), false)
            }
            (Proto::Resp3, reply) => {
                redis_protocol::resp3::encode::complete::extend_encode(buf, &reply.resp3(), false)
            }
        };
        if let Err(e) = encoded {
            tracing::error!(error = %e, "encoding a Sentinel reply failed");
            buf.extend_from_slice(b"-ERR internal error\r\n");
        }
    }

    fn resp2(&self) -> Resp2Frame {
        match self {
            Self::Simple(s) => Resp2Frame::SimpleString(single_line(s).into()),
            Self::Error(s) => Resp2Frame::Error(single_line(s).into()),
            Self::Int(i) => Resp2Frame::Integer(*i),
            Self::Bulk(b) => Resp2Frame::BulkString(b.clone()),
            // A null array nested in an array does not occur; a null bulk reads the same.
            Self::Null | Self::NullArray => Resp2Frame::Null,
            Self::Array(items) | Self::Push(items) => {
                Resp2Frame::Array(items.iter().map(Self::resp2).collect())
            }
            Self::Map(pairs) => Resp2Frame::Array(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [k.resp2(), v.resp2()])
                    .collect(),
            ),
        }
    }

    fn resp3(&self) -> Resp3Frame {
        match self {
            Self::Simple(s) => Resp3Frame::SimpleString {
                data: single_line(s).into(),
                attributes: None,
            },
            Self::Error(s) => Resp3Frame::SimpleError {
                data: single_line(s).into(),
                attributes: None,
            },
            Self::Int(i) => Resp3Frame::Number {
                data: *i,
                attributes: None,
            },
            Self::Bulk(b) => Resp3Frame::BlobString {
                data: b.clone(),
                attributes: None,
            },
            Self::Null | Self::NullArray => Resp3Frame::Null,
            Self::Array(items) => Resp3Frame::Array {
                data: items.iter().map(Self::resp3).collect(),
                attributes: None,
            },
            Self::Push(items) => Resp3Frame::Push {
                data: items.iter().map(Self::resp3).collect(),
                attributes: None,
            },
            Self::Map(pairs) => {
                let mut map = FrameMap::with_capacity(pairs.len());
                for (k, v) in pairs {
                    map.insert(k.resp3(), v.resp3());
                }
                Resp3Frame::Map {
                    data: map,
                    attributes: None,
                }
            }
        }
    }
}

/// Status and error lines cannot carry CR or LF; client input echoed in an error might.
fn single_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Bounds on what one request may hold.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Bytes of one request, its arguments included.
    pub max_bytes: usize,
    pub max_args: usize,
}

/// Why a request could not be decoded; the connection is answered with the message and closed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
    #[error("Protocol error: {0}")]
    Protocol(String),
}

/// Decodes requests (arrays of bulk strings) through the crate's RESP2 decoder.
///
/// The decoder recurses once per nested array, with no depth limit: a few kilobytes of `*1\r\n`
/// would overflow the stack. Every array header starts a line, so only the bytes before the
/// `max_args + 2`-th line starting with `*` are handed to it; a request that needs more is
/// refused (a command has one header and at most `max_args` arguments that may start with `*`).
pub struct RequestDecoder {
    limits: RequestLimits,
    /// Offsets in the buffer of lines starting with `*`, at most `header_cap()` of them.
    headers: Vec<usize>,
    /// How far the buffer has been scanned for them.
    scanned: usize,
    /// A line ended since the last attempt: only then can a frame have completed.
    due: bool,
}

impl RequestDecoder {
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            limits,
            headers: Vec::new(),
            scanned: 0,
            due: false,
        }
    }

    fn header_cap(&self) -> usize {
        self.limits.max_args + 2
    }

    /// Records new array headers and line ends, stopping at the header cap.
    fn scan(&mut self, buf: &[u8]) {
        while self.scanned < buf.len() && self.headers.len() < self.header_cap() {
            let i = self.scanned;
            if buf[i] == b'\n' {
                self.due = true;
            } else if buf[i] == b'*' && (i == 0 || buf[i - 1] == b'\n') {
                self.headers.push(i);
            }
            self.scanned += 1;
        }
        if self.headers.len() >= self.header_cap() {
            self.due = true;
        }
    }

    /// Drops the first `amount` bytes' bookkeeping after they were consumed.
    fn consumed(&mut self, amount: usize) {
        self.headers.retain(|&p| p >= amount);
        for p in &mut self.headers {
            *p -= amount;
        }
        self.scanned = self.scanned.saturating_sub(amount);
    }

    fn request(&self, frame: RangeFrame, bytes: &Bytes) -> Result<Vec<Bytes>, RequestError> {
        let items = match frame {
            RangeFrame::Array(items) => items,
            // Like Redis, an empty or null multibulk is no command at all.
            RangeFrame::Null => return Ok(Vec::new()),
            _ => return Err(protocol("expected an array of bulk strings")),
        };
        if items.len() > self.limits.max_args {
            return Err(protocol(format!(
                "more than {} arguments in a request",
                self.limits.max_args
            )));
        }
        items
            .into_iter()
            .map(|item| match item {
                RangeFrame::BulkString((start, end)) => Ok(bytes.slice(start..end)),
                _ => Err(protocol("expected an array of bulk strings")),
            })
            .collect()
    }
}

fn protocol(message: impl Into<String>) -> RequestError {
    RequestError::Protocol(message.into())
}

impl Decoder for RequestDecoder {
    type Item = Vec<Bytes>;
    type Error = RequestError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RequestError> {
        self.scan(buf);
        if self.due {
            let window = self
                .headers
                .get(self.header_cap() - 1)
                .copied()
                .unwrap_or(buf.len());
            match decode_range(&buf[..window]) {
                Ok(Some((frame, amount))) => {
                    let bytes = buf.split_to(amount).freeze();
                    self.consumed(amount);
                    return self.request(frame, &bytes).map(Some);
                }
                Ok(None) if window < buf.len() => {
                    return Err(protocol("too many nested arrays or arguments"));
                }
                Ok(None) => self.due = false,
                Err(e) => return Err(protocol(e.details().to_string())),
            }
        }
        if buf.len() > self.limits.max_bytes {
            return Err(protocol(format!(
                "request larger than {} bytes",
                self.limits.max_bytes
            )));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_bytes: 1024,
        max_args: 4,
    };

    fn encoded(reply: &Reply, proto: Proto) -> String {
        let mut buf = BytesMut::new();
        reply.encode(proto, &mut buf);
        String::from_utf8(buf.to_vec()).expect("utf-8")
    }

    /// Feeds `input` in chunks of `chunk` bytes; returns every request and the first error.
    fn decode_all(input: &[u8], chunk: usize) -> (Vec<Vec<Bytes>>, Option<String>) {
        let mut decoder = RequestDecoder::new(LIMITS);
        let mut buf = BytesMut::new();
        let mut requests = Vec::new();
        for part in input.chunks(chunk) {
            buf.extend_from_slice(part);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(r)) => requests.push(r),
                    Ok(None) => break,
                    Err(e) => return (requests, Some(e.to_string())),
                }
            }
        }
        (requests, None)
    }

    #[test]
    fn replies_encode_like_sentinel_in_both_protocols() {
        let map = Reply::fields([("name", "a"), ("port", "6379")]);
        let push = Reply::Push(vec![Reply::bulk("message"), Reply::Int(1)]);
        for (reply, proto, expected) in [
            (
                &map,
                Proto::Resp2,
                "*4\r\n$4\r\nname\r\n$1\r\na\r\n$4\r\nport\r\n$4\r\n6379\r\n",
            ),
            (
                &map,
                Proto::Resp3,
                "%2\r\n$4\r\nname\r\n$1\r\na\r\n$4\r\nport\r\n$4\r\n6379\r\n",
            ),
            (&Reply::NullArray, Proto::Resp2, "*-1\r\n"),
            (&Reply::NullArray, Proto::Resp3, "_\r\n"),
            (&Reply::Null, Proto::Resp2, "$-1\r\n"),
            (&push, Proto::Resp2, "*2\r\n$7\r\nmessage\r\n:1\r\n"),
            (&push, Proto::Resp3, ">2\r\n$7\r\nmessage\r\n:1\r\n"),
            (&Reply::error("ERR a\r\nb"), Proto::Resp2, "-ERR a  b\r\n"),
        ] {
            assert_eq!(encoded(reply, proto), expected, "{reply:?} in {proto:?}");
        }
    }

    #[test]
    fn pipelined_requests_decode_whatever_the_chunking() {
        let input = b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nPING\r\n$1\r\n*\r\n*0\r\n";
        for chunk in [1, 3, 7, input.len()] {
            let (requests, error) = decode_all(input, chunk);
            assert_eq!(error, None, "chunk {chunk}");
            assert_eq!(
                requests,
                vec![
                    vec![Bytes::from("PING")],
                    vec![Bytes::from("PING"), Bytes::from("*")],
                    vec![],
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn many_pipelined_requests_are_not_mistaken_for_nesting() {
        let input = b"*1\r\n$4\r\nPING\r\n".repeat(50);
        let (requests, error) = decode_all(&input, input.len());
        assert_eq!(error, None);
        assert_eq!(requests.len(), 50);
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing() {
        let mut input = b"*1\r\n".repeat(100_000);
        input.extend_from_slice(b"$1\r\na\r\n");
        let mut decoder = RequestDecoder::new(RequestLimits {
            max_bytes: 1 << 20,
            max_args: 4,
        });
        let mut buf = BytesMut::from(&input[..]);
        let err = decoder.decode(&mut buf).expect_err("refused");
        assert!(err.to_string().contains("nested"), "{err}");
    }

    #[test]
    fn malformed_oversized_and_odd_requests_are_refused() {
        for (input, expected) in [
            (&b"*1\r\n:1\r\n"[..], "array of bulk strings"),
            (b"+PING\r\n", "array of bulk strings"),
            (
                b"*2\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n",
                "array of bulk strings",
            ),
            (b"*1\r\n$-5\r\n", "Protocol error"),
            (b"*x\r\n", "Protocol error"),
            (b"?\r\n", "Protocol error"),
            (
                b"*5\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n",
                "arguments",
            ),
        ] {
            let (requests, error) = decode_all(input, input.len());
            assert!(requests.is_empty(), "{input:?}");
            let error = error.unwrap_or_default();
            assert!(error.contains(expected), "{input:?}: {error}");
        }
        let mut big = b"*1\r\n$5000\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2000));
        let (_, error) = decode_all(&big, 100);
        assert!(error.unwrap_or_default().contains("larger than 1024"));
        // A header line that never ends is bounded too.
        let (_, error) = decode_all(&[b'$'; 2000], 10);
        assert!(error.unwrap_or_default().contains("larger than 1024"));
    }
}
