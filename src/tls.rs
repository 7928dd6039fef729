//! The operator's side of TLS to the instances (`spec.tls`).
//!
//! Redis verifies its peers against the CA only. The operator also checks that the certificate
//! names the instance it meant to reach: it dials the pod IP, which no certificate can carry (it
//! is known only once the pod runs), and verifies the pod's DNS name
//! `<pod>.<name>-headless.<namespace>.svc` instead.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Keys of a `kubernetes.io/tls` Secret, as cert-manager writes it.
pub const CERT_KEY: &str = "tls.crt";
pub const PRIVATE_KEY_KEY: &str = "tls.key";
pub const CA_KEY: &str = "ca.crt";

/// What is wrong with the TLS material; each names the Secret key to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{key} is not PEM the operator can read: {detail}")]
    Pem { key: &'static str, detail: String },
    #[error("{key} holds no PEM certificate")]
    NoCertificate { key: &'static str },
    #[error("{CA_KEY} holds a certificate that cannot be a trust anchor: {0}")]
    Ca(#[source] rustls::Error),
    #[error("{CERT_KEY} and {PRIVATE_KEY_KEY} do not make a usable client certificate: {0}")]
    ClientCertificate(#[source] rustls::Error),
}

/// Connects to the instances of one replication over TLS.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    /// Instance `<pod>` must present a certificate for `<pod>.<domain>`.
    domain: String,
}

impl TlsClient {
    /// From the Secret's PEM contents. The operator always presents the instances' certificate
    /// as its own client certificate: instances with `authClients` require one and the others
    /// ignore it, so switching `authClients` never locks the operator out of the instances the
    /// rolling update has not replaced yet.
    pub fn new(ca: &[u8], cert: &[u8], key: &[u8], domain: String) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for anchor in certificates(CA_KEY, ca)? {
            roots.add(anchor).map_err(Error::Ca)?;
        }
        let cert = certificates(CERT_KEY, cert)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| Error::Pem {
            key: PRIVATE_KEY_KEY,
            detail: e.to_string(),
        })?;
        // ring: the provider kube's rustls-tls already builds.
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .and_then(|builder| {
                    builder
                        .with_root_certificates(roots)
                        .with_client_auth_cert(cert, key)
                })
                .map_err(Error::ClientCertificate)?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            domain,
        })
    }

    /// The name instance `pod`'s certificate must carry.
    pub fn server_name(&self, pod: &str) -> String {
        format!("{pod}.{}", self.domain)
    }

    /// The TLS handshake with instance `pod` on `tcp`.
    pub async fn handshake(
        &self,
        pod: &str,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(self.server_name(pod))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector.connect(name, tcp).await
    }
}

/// Every certificate in `pem` (the value of Secret key `key`), at least one.
pub fn certificates(key: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            key,
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate { key });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A throwaway CA and a certificate for `*.cache-headless.shop.svc` (tests/fixtures/tls).
    const CA: &[u8] = include_bytes!("../tests/fixtures/tls/ca.crt");
    const CERT: &[u8] = include_bytes!("../tests/fixtures/tls/tls.crt");
    const KEY: &[u8] = include_bytes!("../tests/fixtures/tls/tls.key");

    fn client(domain: &str) -> TlsClient {
        TlsClient::new(CA, CERT, KEY, domain.into()).expect("valid material")
    }

    /// A TLS server with the fixture certificate that echoes one byte.
    async fn echo_server() -> std::net::SocketAddr {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            certificates(CERT_KEY, CERT).expect("cert"),
            PrivateKeyDer::from_pem_slice(KEY).expect("key"),
        )
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut byte = [0u8; 1];
                        if tls.read_exact(&mut byte).await.is_ok() {
                            let _ = tls.write_all(&byte).await;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn verifies_the_pod_name_not_the_dialled_ip() {
        let addr = echo_server().await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut tls = client("cache-headless.shop.svc")
            .handshake("cache-0", tcp)
            .await
            .expect("the certificate names cache-0.cache-headless.shop.svc");
        tls.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.expect("read");
        assert_eq!(&byte, b"x");

        let tcp = TcpStream::connect(addr).await.expect("connect");
        let other = client("cache-headless.other.svc");
        assert_eq!(
            other.server_name("cache-0"),
            "cache-0.cache-headless.other.svc"
        );
        let err = other
            .handshake("cache-0", tcp)
            .await
            .expect_err("a certificate for another namespace is refused");
        assert!(err.to_string().contains("not valid for name"), "{err}");
    }

    #[test]
    fn bad_material_names_the_secret_key() {
        let err = |ca: &[u8], cert: &[u8], key: &[u8]| {
            TlsClient::new(ca, cert, key, "d".into())
                .err()
                .expect("refused")
                .to_string()
        };
        assert!(err(b"", CERT, KEY).starts_with("ca.crt holds no PEM certificate"));
        assert!(err(CA, b"garbage", KEY).starts_with("tls.crt holds no PEM certificate"));
        assert!(err(CA, CERT, b"").starts_with("tls.key is not PEM"));
        let truncated = &CA[..CA.len() / 2];
        assert!(err(truncated, CERT, KEY).starts_with("ca.crt is not PEM"));
    }
}
