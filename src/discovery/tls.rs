//! TLS on the Sentinel port, as Sentinel's own `tls-port` (with `port 0`): the endpoint then
//! speaks TLS only, with the certificate of a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`
//! and, to verify clients, `ca.crt`). A mounted Secret is updated in place when cert-manager
//! renews it, so the files are read again when they change; until new ones load, the last good
//! ones are served.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::tls::{CA_KEY, CERT_KEY, PRIVATE_KEY_KEY, certificates};

/// Whether clients must present a certificate signed by `ca.crt`: Sentinel's
/// `tls-auth-clients`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuth {
    /// Clients need no certificate.
    No,
    /// Clients must present one (Redis's default).
    Yes,
    /// Clients may present one, which is then verified.
    Optional,
}

/// Where the certificate is and what clients must show.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub dir: PathBuf,
    pub client_auth: ClientAuth,
}

/// Why TLS cannot be served; each names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", dir.display())]
    Material {
        dir: PathBuf,
        #[source]
        source: crate::tls::Error,
    },
    #[error("{} is not a PEM private key: {detail}", path.display())]
    Key { path: PathBuf, detail: String },
    #[error("{}: the certificate cannot be served: {source}", dir.display())]
    Config {
        dir: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: {CA_KEY} cannot verify client certificates: {detail}", dir.display())]
    ClientVerifier { dir: PathBuf, detail: String },
}

/// How often the files' modification times are looked at, at most (on a connection).
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// The acceptor for the current files.
pub struct Certificates {
    settings: TlsSettings,
    check_every: Duration,
    state: Mutex<Loaded>,
}

struct Loaded {
    acceptor: TlsAcceptor,
    /// The modification times the acceptor was built from.
    stamp: Vec<Option<SystemTime>>,
    checked: Instant,
    /// Successful loads, the first included.
    generation: u64,
}

impl Certificates {
    /// Loads the files now: bad material stops the start.
    pub fn load(settings: TlsSettings, check_every: Duration) -> Result<Self, TlsError> {
        let stamp = stamp(&settings.dir);
        let acceptor = acceptor(&settings)?;
        Ok(Self {
            settings,
            check_every,
            state: Mutex::new(Loaded {
                acceptor,
                stamp,
                checked: Instant::now(),
                generation: 1,
            }),
        })
    }

    /// The acceptor to use for a new connection, rebuilt first if the files changed.
    pub fn current(&self) -> TlsAcceptor {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            let now = stamp(&self.settings.dir);
            if now != state.stamp {
                match acceptor(&self.settings) {
                    Ok(acceptor) => {
                        tracing::info!(dir = %self.settings.dir.display(), "Sentinel TLS certificate reloaded");
                        state.acceptor = acceptor;
                        state.stamp = now;
                        state.generation += 1;
                    }
                    // Half-written or mismatched files, typically: try again at the next check.
                    Err(e) => {
                        tracing::warn!(error = %e, "Sentinel TLS files changed but do not load; serving the previous ones")
                    }
                }
            }
        }
        state.acceptor.clone()
    }

    #[cfg(test)]
    fn generation(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }
}

/// The modification times of the files (through the symlinks a mounted Secret is made of).
fn stamp(dir: &Path) -> Vec<Option<SystemTime>> {
    [CERT_KEY, PRIVATE_KEY_KEY, CA_KEY]
        .iter()
        .map(|name| {
            std::fs::metadata(dir.join(name))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, TlsError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|source| TlsError::Read { path, source })
}

/// The acceptor for `settings`.
pub fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, TlsError> {
    let dir = &settings.dir;
    let material = |source| TlsError::Material {
        dir: dir.clone(),
        source,
    };
    let chain = certificates(CERT_KEY, &read(dir, CERT_KEY)?).map_err(material)?;
    let key =
        PrivateKeyDer::from_pem_slice(&read(dir, PRIVATE_KEY_KEY)?).map_err(|e| TlsError::Key {
            path: dir.join(PRIVATE_KEY_KEY),
            detail: e.to_string(),
        })?;
    // ring: the provider kube's rustls-tls already builds.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            dir: dir.clone(),
            source,
        })?;
    let builder = match settings.client_auth {
        ClientAuth::No => builder.with_no_client_auth(),
        auth => {
            let mut roots = RootCertStore::empty();
            for anchor in certificates(CA_KEY, &read(dir, CA_KEY)?).map_err(material)? {
                roots
                    .add(anchor)
                    .map_err(|e| material(crate::tls::Error::Ca(e)))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|e| TlsError::ClientVerifier {
                dir: dir.clone(),
                detail: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config {
            dir: dir.clone(),
            source,
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::broadcast;

    use super::super::resp::RequestLimits;
    use super::super::server::{Limits, serve};
    use super::super::{Catalog, Shared};
    use super::*;

    /// tests/fixtures/tls: a throwaway CA and a certificate for `*.cache-headless.shop.svc`.
    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
    }

    async fn tls_server(client_auth: ClientAuth) -> std::net::SocketAddr {
        let certificates = Certificates::load(
            TlsSettings {
                dir: fixtures(),
                client_auth,
            },
            RELOAD_CHECK,
        )
        .expect("the fixtures make a server");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            catalog: RwLock::new(Catalog::default()),
            events: broadcast::channel(4).0,
            password: None,
            run_id: "0".repeat(40),
            peers: RwLock::default(),
        });
        let limits = Limits {
            max_connections: 4,
            idle_timeout: std::time::Duration::from_secs(5),
            request: RequestLimits {
                max_bytes: 1024,
                max_args: 8,
            },
        };
        tokio::spawn(serve(
            listener,
            shared,
            limits,
            Some(Arc::new(certificates)),
        ));
        addr
    }

    /// PING over TLS, presenting the fixture certificate as the client's when `present`.
    async fn ping(addr: std::net::SocketAddr, present: bool) -> std::io::Result<Vec<u8>> {
        let mut roots = RootCertStore::empty();
        let ca = std::fs::read(fixtures().join(CA_KEY))?;
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.expect("ca")).expect("anchor");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        let config = if present {
            let cert =
                certificates(CERT_KEY, &std::fs::read(fixtures().join(CERT_KEY))?).expect("cert");
            let key = PrivateKeyDer::from_pem_file(fixtures().join(PRIVATE_KEY_KEY)).expect("key");
            builder
                .with_client_auth_cert(cert, key)
                .expect("client cert")
        } else {
            builder.with_no_client_auth()
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("sentinel.cache-headless.shop.svc").expect("name");
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut reply = vec![0; 7];
        tls.read_exact(&mut reply).await?;
        Ok(reply)
    }

    #[tokio::test]
    async fn the_endpoint_speaks_tls_and_verifies_clients_when_asked() {
        let open = tls_server(ClientAuth::No).await;
        assert_eq!(ping(open, false).await.expect("PONG"), b"+PONG\r\n");
        let plain = TcpStream::connect(open).await.expect("connect");
        let (mut r, mut w) = plain.into_split();
        w.write_all(b"*1\r\n$4\r\nPING\r\n").await.expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), r.read_to_end(&mut got))
            .await
            .expect("closed in time");
        assert!(!got.starts_with(b"+PONG"), "no plain-text answer: {got:?}");

        let strict = tls_server(ClientAuth::Yes).await;
        assert_eq!(ping(strict, true).await.expect("PONG"), b"+PONG\r\n");
        assert!(
            ping(strict, false).await.is_err(),
            "no certificate, no answer"
        );
        let optional = tls_server(ClientAuth::Optional).await;
        assert_eq!(ping(optional, false).await.expect("PONG"), b"+PONG\r\n");
    }

    #[test]
    fn missing_or_bad_material_names_the_file() {
        let dir = std::env::temp_dir().join(format!("vigil-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let err = |auth| {
            acceptor(&TlsSettings {
                dir: dir.clone(),
                client_auth: auth,
            })
            .err()
            .expect("refused")
            .to_string()
        };
        assert!(
            err(ClientAuth::No).contains("tls.crt"),
            "{}",
            err(ClientAuth::No)
        );
        std::fs::copy(fixtures().join(CERT_KEY), dir.join(CERT_KEY)).expect("copy");
        std::fs::write(dir.join(PRIVATE_KEY_KEY), "garbage").expect("write");
        assert!(
            err(ClientAuth::No).contains("tls.key"),
            "{}",
            err(ClientAuth::No)
        );
        std::fs::copy(fixtures().join(PRIVATE_KEY_KEY), dir.join(PRIVATE_KEY_KEY)).expect("copy");
        assert!(
            err(ClientAuth::Yes).contains("ca.crt"),
            "{}",
            err(ClientAuth::Yes)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn changed_files_are_reloaded_and_bad_ones_leave_the_last_good_ones() {
        let dir = std::env::temp_dir().join(format!("vigil-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let copy = |name: &str| {
            std::fs::copy(fixtures().join(name), dir.join(name)).expect("copy");
        };
        for name in [CERT_KEY, PRIVATE_KEY_KEY, CA_KEY] {
            copy(name);
        }
        let settings = TlsSettings {
            dir: dir.clone(),
            client_auth: ClientAuth::No,
        };
        let certificates = Certificates::load(settings, Duration::ZERO).expect("loads");
        let _ = certificates.current();
        assert_eq!(
            certificates.generation(),
            1,
            "unchanged files are not reloaded"
        );

        // A modification time in the future stands for a renewal.
        let touch = |name: &str, secs: u64| {
            let file = std::fs::File::options()
                .write(true)
                .open(dir.join(name))
                .expect("open");
            file.set_modified(SystemTime::now() + Duration::from_secs(secs))
                .expect("set mtime");
        };
        touch(CERT_KEY, 60);
        let _ = certificates.current();
        assert_eq!(
            certificates.generation(),
            2,
            "a renewed certificate is loaded"
        );

        std::fs::write(dir.join(PRIVATE_KEY_KEY), "half written").expect("write");
        let _ = certificates.current();
        assert_eq!(
            certificates.generation(),
            2,
            "bad files keep the last good ones"
        );
        copy(PRIVATE_KEY_KEY);
        touch(PRIVATE_KEY_KEY, 120);
        let _ = certificates.current();
        assert_eq!(
            certificates.generation(),
            3,
            "loaded once they are good again"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
