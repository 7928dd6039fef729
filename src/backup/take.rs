//! One attempt at a backup: connect to the source instance, stream its snapshot into the
//! object store, write the manifest.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::info;

use super::Error;
use super::snapshot::Snapshot;
use super::store::{Manifest, Store};
use crate::redis::{Address, Credentials};

/// How long connecting (and the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a running backup reports its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Where one attempt reads from and writes to.
pub struct Attempt<'a> {
    /// `<namespace>/<replication>`.
    pub replication: String,
    pub backup: &'a str,
    pub pod: &'a str,
    pub address: &'a Address,
    pub credentials: &'a Credentials,
    pub store: &'a Store,
    pub dir: &'a str,
}

impl Attempt<'_> {
    /// Runs the attempt; `progress` is told the bytes uploaded every [`PROGRESS_EVERY`];
    /// `confirm` is asked, once the snapshot is uploaded and before the manifest makes it a
    /// backup, whether its source still holds the role it was chosen for.
    pub async fn run<F, Fut, C, CFut>(&self, mut progress: F, confirm: C) -> Result<Manifest, Error>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = ()>,
        C: FnOnce() -> CFut,
        CFut: Future<Output = Result<(), Error>>,
    {
        let snapshot_error = |source| Error::Snapshot {
            pod: self.pod.to_string(),
            source,
        };
        let connect = async {
            let tcp = TcpStream::connect((self.address.host.as_str(), self.address.port)).await?;
            tcp.set_nodelay(true)?;
            match &self.credentials.tls {
                None => Ok(Box::new(tcp) as Box<dyn Stream>),
                Some(tls) => Ok(Box::new(tls.handshake(self.pod, tcp).await?) as Box<dyn Stream>),
            }
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| Error::Connect {
                pod: self.pod.to_string(),
                address: self.address.to_string(),
                detail: format!("no connection within {CONNECT_TIMEOUT:?}"),
            })?
            .map_err(|e: std::io::Error| Error::Connect {
                pod: self.pod.to_string(),
                address: self.address.to_string(),
                detail: e.to_string(),
            })?;
        let started = Instant::now();
        let mut snapshot = Snapshot::start(stream, self.credentials.password.as_deref())
            .await
            .map_err(snapshot_error)?;
        let mut upload = self.store.begin(self.dir).await?;
        let mut reported = Instant::now();
        let streamed = async {
            while let Some(chunk) = snapshot.next_chunk().await.map_err(snapshot_error)? {
                upload.write(chunk).await?;
                if reported.elapsed() >= PROGRESS_EVERY {
                    progress(upload.bytes()).await;
                    reported = Instant::now();
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        // A source deposed meanwhile (a failover while it streamed) holds a history the set
        // no longer follows: not a backup of it.
        let streamed = match streamed {
            Ok(()) => confirm().await,
            Err(e) => Err(e),
        };
        if let Err(e) = streamed {
            upload.abort().await;
            return Err(e);
        }
        let manifest = upload
            .finish(Manifest {
                version: 0,
                replication: self.replication.clone(),
                backup: self.backup.to_string(),
                source: self.pod.to_string(),
                replication_id: snapshot.replication_id.clone(),
                offset: snapshot.offset,
                bytes: 0,
                sha256: String::new(),
                created_at: Timestamp::now().to_string(),
            })
            .await?;
        let secs = started.elapsed().as_secs_f64();
        info!(
            bytes = manifest.bytes,
            seconds = secs,
            mb_per_s = manifest.bytes as f64 / 1e6 / secs.max(1e-3),
            "backup uploaded"
        );
        Ok(manifest)
    }
}

/// A byte stream the snapshot runs on: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
