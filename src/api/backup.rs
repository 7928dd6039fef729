//! Backups: where they go (`spec.backup` of a RedisReplication), one backup (`RedisBackup`), a
//! schedule of them (`RedisScheduledBackup`), and a new set restored from one
//! (`spec.bootstrap`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, versitygw, ...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSpec {
    /// URL of the S3 API, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://minio.minio:9000`.
    #[schemars(
        length(min = 1, max = 2048),
        pattern(r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    )]
    pub endpoint: String,
    /// The bucket; it must exist.
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// A prefix in the bucket under which backups are written, as
    /// `<path>/<namespace>/<replication>/<backup>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), pattern(r"^[A-Za-z0-9!_.*'()/-]*$"))]
    pub path: Option<String>,
    /// The signing region. Default: `us-east-1`, which most S3-compatible servers accept.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// The Secret (same namespace) holding the access key.
    pub credentials: ObjectStoreCredentials,
    /// A CA that signs the endpoint's certificate, when it is not one the system trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaSelector>,
}

/// The keys of the object store's access key in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreCredentials {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1))]
    pub access_key_id_key: String,
    /// Key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1))]
    pub secret_access_key_key: String,
}

/// A PEM CA certificate in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the PEM certificate(s).
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_access_key_id_key() -> String {
    "ACCESS_KEY_ID".into()
}
fn default_secret_access_key_key() -> String {
    "ACCESS_SECRET_KEY".into()
}
fn default_ca_key() -> String {
    "ca.crt".into()
}

/// `spec.backup` of a RedisReplication: where its backups go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    pub object_store: ObjectStoreSpec,
    /// Which instance the snapshot is taken from, unless a backup says otherwise.
    #[serde(default)]
    pub target: BackupTarget,
}

/// Which instance serves a backup's snapshot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupTarget {
    /// A replica in sync with the master, so the master never forks for a backup; the master
    /// only when it has no such replica.
    #[default]
    PreferReplica,
    /// Always the master.
    Master,
}

/// One backup of a RedisReplication: a snapshot streamed to its object store.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "redis.vigil.dev",
    version = "v1alpha1",
    kind = "RedisBackup",
    namespaced,
    status = "RedisBackupStatus",
    shortname = "rb",
    category = "vigil",
    printcolumn = r#"{"name":"Replication","type":"string","jsonPath":".spec.replication"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".status.source"}"#,
    printcolumn = r#"{"name":"Bytes","type":"integer","jsonPath":".status.bytes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("a RedisBackup's spec cannot be changed; create another one").reason(kube::core::Reason::FieldValueForbidden))]
pub struct RedisBackupSpec {
    /// The RedisReplication (same namespace) to back up; its `spec.backup` says where to.
    #[schemars(length(min = 1, max = 63))]
    pub replication: String,
    /// Overrides the replication's `spec.backup.target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
}

/// Where a backup stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    Pending,
    Running,
    /// The snapshot and its manifest are in the object store.
    Completed,
    /// It will not be retried; `error` says why.
    Failed,
}

/// What a backup holds and where, as far as it got.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisBackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The instance (pod) the snapshot was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Bytes of the snapshot: uploaded so far while running, the total when completed.
    #[serde(default)]
    pub bytes: i64,
    /// The replication id and offset the snapshot holds (the state of the data at that point of
    /// the master's history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// The object store written to, as it was when the backup ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreSpec>,
    /// The backup's directory in the bucket: `<path>/dump.rdb` and `<path>/manifest.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SHA-256 of the snapshot, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Attempts made (a failed attempt is retried from the current topology, up to 3).
    #[serde(default)]
    pub attempts: i32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Backups of a RedisReplication on a cron schedule, with retention.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "redis.vigil.dev",
    version = "v1alpha1",
    kind = "RedisScheduledBackup",
    namespaced,
    status = "RedisScheduledBackupStatus",
    shortname = "rsb",
    category = "vigil",
    printcolumn = r#"{"name":"Replication","type":"string","jsonPath":".spec.replication"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RedisScheduledBackupSpec {
    /// When to back up: a cron expression of five fields (minute hour day month weekday), or six
    /// with seconds first; UTC.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// The RedisReplication (same namespace) to back up.
    #[schemars(length(min = 1, max = 63))]
    pub replication: String,
    /// Overrides the replication's `spec.backup.target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    /// No new backups while set (retention still applies).
    #[serde(default)]
    pub suspend: bool,
    /// Take the first backup at once instead of at the first scheduled time.
    #[serde(default)]
    pub immediate: bool,
    /// Which completed backups of this schedule to keep; the others are deleted with their
    /// objects.
    #[serde(default)]
    pub retention: RetentionPolicy,
}

/// Keep backups that satisfy every limit given.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// The newest this many completed backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub count: Option<i32>,
    /// Backups younger than this, e.g. `36h`, `7d`, `4w`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[1-9][0-9]{0,5}[mhdw]$"))]
    pub max_age: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisScheduledBackupStatus {
    /// When the last backup was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The RedisBackup created last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// Why the schedule cannot run (an invalid expression, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `spec.bootstrap`: what a new replication starts from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    pub backup: BootstrapBackup,
}

/// The backup a new replication is restored from: a RedisBackup of this namespace, or a
/// backup's directory in an object store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.name) != (has(self.objectStore) && has(self.path))").message("give either name (a RedisBackup) or objectStore and path (a backup's directory in the bucket)"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.name) || (!has(self.objectStore) && !has(self.path))").message("name cannot be combined with objectStore or path"))]
pub struct BootstrapBackup {
    /// A completed RedisBackup in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// The object store holding the backup (credentials Secret in this namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreSpec>,
    /// The backup's directory in the bucket (the RedisBackup's `status.path`), holding
    /// `manifest.json` and `dump.rdb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: Option<String>,
}

/// Where a restore stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    /// The first instance is loading the snapshot; nothing else starts meanwhile.
    Running,
    Completed,
    /// The backup cannot be restored; `error` says why. The first instance does not serve.
    Failed,
}

/// The restore of `spec.bootstrap`, in the replication's status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    pub phase: RestorePhase,
    /// The backup, resolved when the replication was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RestoreSource>,
    /// Keys loaded (every database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A backup as its manifest describes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    pub object_store: ObjectStoreSpec,
    pub path: String,
    /// The RedisBackup, when restored by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    pub bytes: i64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}
