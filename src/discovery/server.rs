//! The TCP side of the Sentinel endpoint: accepting within a connection limit, one task per
//! connection that reads requests, runs them and writes replies, and delivers subscribed
//! events. A misbehaving client only ever loses its own connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use super::Shared;
use super::commands::{After, Context, Session};
use super::events::Event;
use super::resp::{Proto, Reply, RequestDecoder, RequestError, RequestLimits};
use super::tls::Certificates;

/// A client that does not read its replies for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS client that has not completed its handshake by then is disconnected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed, unless it is subscribed.
    pub idle_timeout: Duration,
    pub request: RequestLimits,
}

/// Accepts until the process stops; with `tls`, every connection speaks TLS only.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Limits,
    tls: Option<Arc<Certificates>>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut next_id: u64 = 0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: wait instead of spinning.
                warn!(error = %e, "accepting a Sentinel connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let (shared, tls) = (shared.clone(), tls.clone());
                tokio::spawn(async move {
                    debug!(id, %peer, "Sentinel connection opened");
                    let _ = stream.set_nodelay(true);
                    match tls {
                        None => connection(stream, id, &shared, limits).await,
                        Some(certificates) => {
                            let acceptor = certificates.current();
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => connection(stream, id, &shared, limits).await,
                                Ok(Err(e)) => {
                                    debug!(id, %peer, error = %e, "Sentinel TLS handshake failed");
                                }
                                Err(_) => debug!(id, %peer, "Sentinel TLS handshake timed out"),
                            }
                        }
                    }
                    debug!(id, %peer, "Sentinel connection closed");
                    drop(slot);
                });
            }
            Err(_) => {
                warn!(%peer, limit = limits.max_connections, "refusing a Sentinel connection: too many clients");
                tokio::spawn(async move {
                    let mut stream = stream;
                    let refusal = b"-ERR max number of clients reached\r\n";
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(refusal)).await;
                });
            }
        }
    }
}

async fn connection<S>(stream: S, id: u64, shared: &Shared, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Send,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let mut requests = FramedRead::new(reader, RequestDecoder::new(limits.request));
    let mut session = Session::new(id, shared.password.is_some());
    let mut events: Option<broadcast::Receiver<Arc<Event>>> = None;
    loop {
        let mut out = BytesMut::new();
        let mut after = After::Continue;
        tokio::select! {
            request = requests.next() => match request {
                None => return,
                Some(Ok(args)) => {
                    let (replies, then) = {
                        let (catalog, peers) = (shared.catalog(), shared.peers());
                        let ctx = Context {
                            catalog: &catalog,
                            password: shared.password.as_deref(),
                            run_id: &shared.run_id,
                            peers: &peers,
                        };
                        session.execute(&args, &ctx)
                    };
                    encode(&replies, session.proto, &mut out);
                    after = then;
                    // Receive events only while subscribed, so idle clients never lag; from
                    // before the confirmation is written, so none published meanwhile is lost.
                    match (session.subscribed(), events.is_some()) {
                        (true, false) => events = Some(shared.events.subscribe()),
                        (false, true) => events = None,
                        _ => {}
                    }
                }
                Some(Err(RequestError::Io(e))) => {
                    debug!(id, error = %e, "Sentinel connection read failed");
                    return;
                }
                Some(Err(e)) => {
                    debug!(id, error = %e, "closing a Sentinel connection after a bad request");
                    Reply::error(format!("ERR {e}")).encode(session.proto, &mut out);
                    after = After::Close;
                }
            },
            event = next_event(&mut events) => match event {
                Ok(event) => encode(&session.deliver(&event), session.proto, &mut out),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Redis drops a subscriber whose output buffer overflows; so do we.
                    warn!(id, missed, "disconnecting a Sentinel subscriber that fell behind");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = tokio::time::sleep(limits.idle_timeout), if !session.subscribed() => {
                debug!(id, "closing an idle Sentinel connection");
                return;
            }
        }
        if !out.is_empty() {
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!(id, error = %e, "Sentinel connection write failed");
                    return;
                }
                Err(_) => {
                    debug!(
                        id,
                        "closing a Sentinel connection that does not read its replies"
                    );
                    return;
                }
            }
        }
        if after == After::Close {
            let _ = writer.shutdown().await;
            return;
        }
    }
}

fn encode(replies: &[Reply], proto: Proto, out: &mut BytesMut) {
    for reply in replies {
        reply.encode(proto, out);
    }
}

async fn next_event(
    events: &mut Option<broadcast::Receiver<Arc<Event>>>,
) -> Result<Arc<Event>, broadcast::error::RecvError> {
    match events {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    use super::super::events::Channel;

    use super::*;

    const LIMITS: Limits = Limits {
        max_connections: 2,
        idle_timeout: Duration::from_millis(300),
        request: RequestLimits {
            max_bytes: 1024,
            max_args: 8,
        },
    };

    async fn server(limits: Limits) -> (std::net::SocketAddr, Arc<Shared>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            catalog: RwLock::default(),
            events: broadcast::channel(16).0,
            password: None,
            run_id: "0".repeat(40),
            peers: RwLock::default(),
        });
        tokio::spawn(serve(listener, shared.clone(), limits, None));
        (addr, shared)
    }

    /// Sends `request` and reads until `expected` bytes arrived or the peer closed.
    async fn exchange(stream: &mut TcpStream, request: &[u8], expected: usize) -> String {
        stream.write_all(request).await.expect("write");
        let mut got = Vec::new();
        let mut buf = [0; 512];
        while got.len() < expected {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("an answer in time")
                .expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buf = [0; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn connections_are_limited_and_idle_ones_closed_but_subscribers_kept() {
        let (addr, shared) = server(LIMITS).await;
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        let mut subscriber = TcpStream::connect(addr).await.expect("connect");
        let subscribe = b"*2\r\n$9\r\nSUBSCRIBE\r\n$6\r\n+sdown\r\n";
        let confirmed = "*3\r\n$9\r\nsubscribe\r\n$6\r\n+sdown\r\n:1\r\n";
        assert_eq!(
            exchange(&mut subscriber, subscribe, confirmed.len()).await,
            confirmed
        );

        let mut third = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(
            exchange(&mut third, b"", 36).await,
            "-ERR max number of clients reached\r\n"
        );

        assert!(closed(&mut idle).await, "the idle connection is closed");
        tokio::time::sleep(LIMITS.idle_timeout * 2).await;
        shared
            .events
            .send(Arc::new(Event {
                channel: Channel::Sdown,
                payload: "master m 10.0.0.1 6379".into(),
            }))
            .expect("a subscriber");
        let message = "*3\r\n$7\r\nmessage\r\n$6\r\n+sdown\r\n$22\r\nmaster m 10.0.0.1 6379\r\n";
        assert_eq!(exchange(&mut subscriber, b"", message.len()).await, message);

        // The idle one's slot is free again.
        let mut fresh = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(
            exchange(&mut fresh, b"*1\r\n$4\r\nPING\r\n", 7).await,
            "+PONG\r\n"
        );
    }

    #[tokio::test]
    async fn a_bad_request_gets_an_error_and_a_closed_connection_and_others_are_served() {
        let (addr, _) = server(Limits {
            max_connections: 8,
            ..LIMITS
        })
        .await;
        let mut bad = TcpStream::connect(addr).await.expect("connect");
        let mut good = TcpStream::connect(addr).await.expect("connect");
        let reply = exchange(&mut bad, b"*1\r\n$-7\r\n", 1000).await;
        assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
        assert!(closed(&mut bad).await);
        let mut huge = TcpStream::connect(addr).await.expect("connect");
        let mut request = b"*1\r\n$4000\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'x', 2000));
        let reply = exchange(&mut huge, &request, 1000).await;
        assert!(reply.contains("larger than 1024 bytes"), "{reply}");
        let unknown = b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$1\r\nx\r\n";
        assert_eq!(exchange(&mut good, unknown, 5).await, "*-1\r\n");
        assert_eq!(
            exchange(&mut good, b"*1\r\n$4\r\nQUIT\r\n", 5).await,
            "+OK\r\n"
        );
        assert!(closed(&mut good).await);
    }
}
