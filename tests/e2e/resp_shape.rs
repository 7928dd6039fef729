//! Replies as shapes, for comparing two servers: a RESP client connection (decoding with the
//! redis-protocol crate) whose replies keep what a client relies on — types, field names and
//! order, status and error texts — and bulk values only by kind.

use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::types::OwnedFrame as Frame2;
use redis_protocol::resp3::types::OwnedFrame as Frame3;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A reply with what a client relies on: types, field names, and the texts of status and
/// error replies; bulk values only by kind (integer or text), as they differ between servers.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    Status(String),
    Error(String),
    Int,
    Bulk(Kind),
    Null,
    Array(Vec<Shape>),
    Map(Vec<(String, Shape)>),
    Push(Vec<Shape>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Integer,
    Text,
}

fn kind(bytes: &[u8]) -> Kind {
    match std::str::from_utf8(bytes).map(str::parse::<i64>) {
        Ok(Ok(_)) => Kind::Integer,
        _ => Kind::Text,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Where RESP2 flattens field/value pairs into arrays (RESP3 has maps).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    Plain,
    /// The reply is one instance's fields.
    Fields,
    /// An array of instances' fields.
    EachFields,
}

fn shape2(frame: &Frame2, layout: Layout) -> Shape {
    match (frame, layout) {
        (Frame2::Array(items), Layout::Fields) => Shape::Map(
            items
                .chunks(2)
                .map(|pair| match pair {
                    [Frame2::BulkString(k), v] => (text(k), shape2(v, Layout::Plain)),
                    other => (format!("{other:?}"), Shape::Null),
                })
                .collect(),
        ),
        (Frame2::Array(items), Layout::EachFields) => Shape::Array(
            items
                .iter()
                .map(|item| shape2(item, Layout::Fields))
                .collect(),
        ),
        (Frame2::Array(items), Layout::Plain) => Shape::Array(
            items
                .iter()
                .map(|item| shape2(item, Layout::Plain))
                .collect(),
        ),
        (Frame2::SimpleString(s), _) => Shape::Status(text(s)),
        (Frame2::Error(e), _) => Shape::Error(e.to_string()),
        (Frame2::Integer(_), _) => Shape::Int,
        (Frame2::BulkString(b), _) => Shape::Bulk(kind(b)),
        (Frame2::Null, _) => Shape::Null,
    }
}

fn shape3(frame: &Frame3) -> Shape {
    match frame {
        Frame3::SimpleString { data, .. } => Shape::Status(text(data)),
        Frame3::SimpleError { data, .. } => Shape::Error(data.to_string()),
        Frame3::BlobError { data, .. } => Shape::Error(text(data)),
        Frame3::Number { .. } => Shape::Int,
        Frame3::BlobString { data, .. } => Shape::Bulk(kind(data)),
        Frame3::Null => Shape::Null,
        Frame3::Array { data, .. } => Shape::Array(data.iter().map(shape3).collect()),
        Frame3::Push { data, .. } => Shape::Push(data.iter().map(shape3).collect()),
        Frame3::Map { data, .. } => Shape::Map(
            data.iter()
                .map(|(k, v)| match k {
                    Frame3::BlobString { data, .. } | Frame3::SimpleString { data, .. } => {
                        (text(data), shape3(v))
                    }
                    other => (format!("{other:?}"), shape3(v)),
                })
                .collect(),
        ),
        other => Shape::Error(format!("unexpected frame {other:?}")),
    }
}

/// One client connection, decoding replies with the redis-protocol crate.
pub struct Conn {
    pub what: String,
    stream: TcpStream,
    buf: BytesMut,
    pub resp3: bool,
}

impl Conn {
    pub async fn open(what: &str, port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connecting to {what} on {port}: {e}"));
        Self {
            what: what.to_string(),
            stream,
            buf: BytesMut::new(),
            resp3: false,
        }
    }

    async fn send(&mut self, args: &[&str]) {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.stream
            .write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{}: sending {args:?}: {e}", self.what));
    }

    /// The next reply, as a shape.
    async fn reply(&mut self, layout: Layout) -> Shape {
        loop {
            // The decoders take an empty buffer for a bad frame.
            let decoded = if self.buf.is_empty() {
                Ok(None)
            } else if self.resp3 {
                redis_protocol::resp3::decode::complete::decode(&self.buf)
                    .map(|d| d.map(|(f, n)| (shape3(&f), n)))
            } else {
                redis_protocol::resp2::decode::decode(&self.buf)
                    .map(|d| d.map(|(f, n)| (shape2(&f, layout), n)))
            };
            match decoded {
                Ok(Some((shape, used))) => {
                    let _ = self.buf.split_to(used);
                    return shape;
                }
                Ok(None) => {}
                Err(e) => panic!("{}: undecodable reply {:?}: {e:?}", self.what, self.buf),
            }
            let mut chunk = [0; 4096];
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("{}: no reply in {REPLY_TIMEOUT:?}", self.what))
                .unwrap_or_else(|e| panic!("{}: reading: {e}", self.what));
            assert!(n > 0, "{}: closed the connection", self.what);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `args` and reads `replies` replies.
    pub async fn call(&mut self, args: &[&str], layout: Layout, replies: usize) -> Vec<Shape> {
        self.send(args).await;
        // HELLO answers in the protocol it asks for, unless it fails (the error reads the same).
        let before = self.resp3;
        if args[0].eq_ignore_ascii_case("hello") {
            self.resp3 = args.get(1).map_or(before, |v| *v == "3");
        }
        let mut shapes = Vec::new();
        for _ in 0..replies {
            shapes.push(self.reply(layout).await);
        }
        if matches!(shapes[..], [Shape::Error(_)]) {
            self.resp3 = before;
        }
        shapes
    }
}
