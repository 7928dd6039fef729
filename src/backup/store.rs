//! The object store a backup lives in: the client, the streamed upload with its checksum and
//! manifest, and the verified download a restore makes.
//!
//! A backup directory holds `dump.rdb` and `manifest.json`. The manifest is written last, after
//! the snapshot's upload completed: a directory without one is an interrupted upload and never
//! counts as a backup.

use std::path::Path as FsPath;
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::api::ObjectStoreSpec;

/// The snapshot's object in a backup directory.
pub const SNAPSHOT: &str = "dump.rdb";
/// The manifest's object in a backup directory.
pub const MANIFEST: &str = "manifest.json";

/// Parts of a multipart upload: S3's minimum part size is 5 MiB; larger parts mean fewer
/// requests.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once: enough to keep the link busy (the AWS CLI sends 10), bounded so a
/// running backup holds at most this many parts (64 MiB) whatever the snapshot's size.
const PARTS_IN_FLIGHT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object store {endpoint} cannot be used: {source}")]
    Client {
        endpoint: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("object store {endpoint}: the CA Secret holds no PEM certificate")]
    NoCa { endpoint: String },
    #[error("cannot {action} s3://{bucket}/{path} at {endpoint}: {source}")]
    Request {
        action: &'static str,
        endpoint: String,
        bucket: String,
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("s3://{bucket}/{path} is not a backup manifest vigil wrote: {detail}")]
    Manifest {
        bucket: String,
        path: String,
        detail: String,
    },
    #[error(
        "the snapshot s3://{bucket}/{path} is corrupt: its SHA-256 is {actual}, the manifest \
         says {expected} ({bytes} bytes read, the manifest says {expected_bytes})"
    )]
    Checksum {
        bucket: String,
        path: String,
        expected: String,
        actual: String,
        bytes: u64,
        expected_bytes: u64,
    },
    #[error("cannot {action} {path}: {source}")]
    Local {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The access key (and CA) the spec's Secrets hold.
#[derive(Clone)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// PEM certificates that sign the endpoint's certificate.
    pub ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .finish()
    }
}

/// What a backup holds, written next to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Of this layout; a restore refuses versions it does not know.
    pub version: u32,
    /// `<namespace>/<name>` of the RedisReplication backed up.
    pub replication: String,
    /// The RedisBackup.
    pub backup: String,
    /// The pod the snapshot came from.
    pub source: String,
    pub replication_id: String,
    pub offset: i64,
    pub bytes: u64,
    pub sha256: String,
    /// RFC 3339.
    pub created_at: String,
}

const MANIFEST_VERSION: u32 = 1;

/// A bucket of an S3-compatible store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    endpoint: String,
    bucket: String,
}

impl Store {
    pub fn new(spec: &ObjectStoreSpec, keys: &Keys) -> Result<Self, Error> {
        let client_error = |source| Error::Client {
            endpoint: spec.endpoint.clone(),
            source: Box::new(source),
        };
        let mut options =
            ClientOptions::new().with_allow_http(spec.endpoint.starts_with("http://"));
        if let Some(ca) = &keys.ca {
            let certificates =
                object_store::Certificate::from_pem_bundle(ca).map_err(client_error)?;
            if certificates.is_empty() {
                return Err(Error::NoCa {
                    endpoint: spec.endpoint.clone(),
                });
            }
            for certificate in certificates {
                options = options.with_root_certificate(certificate);
            }
        }
        let inner = AmazonS3Builder::new()
            .with_endpoint(&spec.endpoint)
            .with_bucket_name(&spec.bucket)
            .with_region(&spec.region)
            .with_access_key_id(&keys.access_key_id)
            .with_secret_access_key(&keys.secret_access_key)
            // Path-style requests: what every S3-compatible server understands.
            .with_virtual_hosted_style_request(false)
            .with_client_options(options)
            .build()
            .map_err(client_error)?;
        Ok(Self {
            inner: Arc::new(inner),
            endpoint: spec.endpoint.clone(),
            bucket: spec.bucket.clone(),
        })
    }

    fn request_error(
        &self,
        action: &'static str,
        path: &Path,
    ) -> impl Fn(object_store::Error) -> Error {
        let (endpoint, bucket, path) =
            (self.endpoint.clone(), self.bucket.clone(), path.to_string());
        move |source| Error::Request {
            action,
            endpoint: endpoint.clone(),
            bucket: bucket.clone(),
            path: path.clone(),
            source: Box::new(source),
        }
    }

    /// Starts writing the snapshot of the backup directory `dir`.
    pub async fn begin(&self, dir: &str) -> Result<Upload, Error> {
        let path = Path::from(format!("{dir}/{SNAPSHOT}"));
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(self.request_error("start uploading", &path))?;
        Ok(Upload {
            store: self.clone(),
            dir: dir.to_string(),
            path,
            writer: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            hash: Sha256::new(),
            bytes: 0,
        })
    }

    /// The manifest of the backup directory `dir`.
    pub async fn manifest(&self, dir: &str) -> Result<Manifest, Error> {
        let path = Path::from(format!("{dir}/{MANIFEST}"));
        let fail = self.request_error("read", &path);
        let bytes = self
            .inner
            .get(&path)
            .await
            .map_err(&fail)?
            .bytes()
            .await
            .map_err(&fail)?;
        let invalid = |detail: String| Error::Manifest {
            bucket: self.bucket.clone(),
            path: path.to_string(),
            detail,
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        if manifest.version != MANIFEST_VERSION {
            return Err(invalid(format!("layout version {}", manifest.version)));
        }
        Ok(manifest)
    }

    /// Streams the snapshot of `dir` into `dest`, verifying it against `manifest`: `dest` only
    /// appears (renamed from `<dest>.partial`) when every byte matched.
    pub async fn download(
        &self,
        dir: &str,
        manifest: &Manifest,
        dest: &FsPath,
    ) -> Result<(), Error> {
        let path = Path::from(format!("{dir}/{SNAPSHOT}"));
        let fail = self.request_error("download", &path);
        let partial = dest.with_extension("partial");
        let local = |action, source| Error::Local {
            action,
            path: partial.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| local("create", e))?;
        let mut stream = self.inner.get(&path).await.map_err(&fail)?.into_stream();
        let mut hash = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(&fail)?;
            hash.update(&chunk);
            bytes += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| local("write", e))?;
        }
        let actual = hex(&hash.finalize());
        if actual != manifest.sha256 || bytes != manifest.bytes {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(Error::Checksum {
                bucket: self.bucket.clone(),
                path: path.to_string(),
                expected: manifest.sha256.clone(),
                actual,
                bytes,
                expected_bytes: manifest.bytes,
            });
        }
        file.sync_all().await.map_err(|e| local("sync", e))?;
        tokio::fs::rename(&partial, dest)
            .await
            .map_err(|e| local("rename", e))
    }

    /// Deletes the backup directory `dir`: the manifest first, so what remains if this is
    /// interrupted no longer counts as a backup.
    pub async fn delete(&self, dir: &str) -> Result<(), Error> {
        for name in [MANIFEST, SNAPSHOT] {
            let path = Path::from(format!("{dir}/{name}"));
            match self.inner.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.request_error("delete", &path)(e)),
            }
        }
        Ok(())
    }
}

/// A snapshot being written; nothing counts until [`Upload::finish`] wrote the manifest.
pub struct Upload {
    store: Store,
    dir: String,
    path: Path,
    writer: WriteMultipart,
    hash: Sha256,
    bytes: u64,
}

impl Upload {
    /// Adds `chunk`, waiting while too many parts are in flight (back-pressure on the source).
    pub async fn write(&mut self, chunk: bytes::Bytes) -> Result<(), Error> {
        self.hash.update(&chunk);
        self.bytes += chunk.len() as u64;
        self.writer.put(chunk);
        self.writer
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(self.store.request_error("upload", &self.path))
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Completes the snapshot's upload, then writes the manifest (`manifest` with the size and
    /// checksum filled in).
    pub async fn finish(self, mut manifest: Manifest) -> Result<Manifest, Error> {
        let fail = self.store.request_error("complete", &self.path);
        self.writer.finish().await.map_err(fail)?;
        manifest.version = MANIFEST_VERSION;
        manifest.bytes = self.bytes;
        manifest.sha256 = hex(&self.hash.finalize());
        let path = Path::from(format!("{}/{MANIFEST}", self.dir));
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Manifest {
            bucket: self.store.bucket.clone(),
            path: path.to_string(),
            detail: e.to_string(),
        })?;
        self.store
            .inner
            .put(&path, PutPayload::from(json))
            .await
            .map_err(self.store.request_error("write", &path))?;
        Ok(manifest)
    }

    /// Drops the parts uploaded so far (best effort: a bucket lifecycle rule for incomplete
    /// multipart uploads catches what a crash leaves).
    pub async fn abort(self) {
        let _ = self.writer.abort().await;
    }
}

/// `<path>/<namespace>/<replication>/<backup>`, without empty parts.
pub fn backup_dir(
    spec: &ObjectStoreSpec,
    namespace: &str,
    replication: &str,
    backup: &str,
) -> String {
    let prefix = spec.path.as_deref().unwrap_or("").trim_matches('/');
    [prefix, namespace, replication, backup]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: Option<&str>) -> ObjectStoreSpec {
        serde_json::from_value(serde_json::json!({
            "endpoint": "http://127.0.0.1:9000",
            "bucket": "backups",
            "path": path,
            "credentials": {"name": "s3"},
        }))
        .expect("valid spec")
    }

    #[test]
    fn backup_dirs_skip_an_empty_prefix() {
        assert_eq!(backup_dir(&spec(None), "ns", "cache", "b1"), "ns/cache/b1");
        assert_eq!(
            backup_dir(&spec(Some("/team/redis/")), "ns", "cache", "b1"),
            "team/redis/ns/cache/b1"
        );
    }

    #[test]
    fn a_plain_http_endpoint_and_a_bad_ca_are_told() {
        let keys = |ca: Option<&[u8]>| Keys {
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
            ca: ca.map(<[u8]>::to_vec),
        };
        assert!(Store::new(&spec(None), &keys(None)).is_ok());
        let err = Store::new(&spec(None), &keys(Some(b"not a certificate")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
