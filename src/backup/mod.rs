//! Backups to an S3-compatible object store: the `RedisBackup` controller takes each snapshot
//! over the replication protocol from the instance the target names; the schedule controller
//! creates them and applies retention.

pub mod schedule;
pub mod snapshot;
pub mod store;
mod take;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span, warn};

use crate::api::{
    BackupPhase, BackupTarget, InstanceRole, LinkStatus, ObjectStoreSpec, RedisBackup,
    RedisBackupStatus, RedisReplication, RedisReplicationStatus,
};
use crate::controller::{Context, secret_bytes};
use crate::redis::Address;
use store::{Keys, Store};

/// A failed attempt is retried from the then current topology this many times in all.
const MAX_ATTEMPTS: i32 = 3;

/// How soon a backup that cannot start yet (no instance to read from, a Secret missing) or
/// whose attempt failed looks again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot connect to {pod} at {address}: {detail}")]
    Connect {
        pod: String,
        address: String,
        detail: String,
    },
    #[error("the snapshot from {pod} failed: {source}")]
    Snapshot {
        pod: String,
        #[source]
        source: snapshot::Error,
    },
    #[error(transparent)]
    Secret(#[from] crate::controller::Error),
    #[error("the set changed while the snapshot streamed: {0}; not kept as a backup")]
    TopologyChanged(String),
}

fn kube_error(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let context = context.into();
    move |source| Error::Kube { context, source }
}

/// The instance a backup reads from: with `PreferReplica`, the replica furthest along among
/// those ready (linked and in sync) that are not fenced; otherwise, or when there is none, the
/// master. None while the set has no master.
pub fn choose_source(
    status: &RedisReplicationStatus,
    target: BackupTarget,
) -> Option<(String, Address)> {
    let usable = |i: &&crate::api::InstanceStatus| {
        !status.fenced_instances.contains(&i.name)
            && i.address.as_deref().and_then(Address::parse).is_some()
    };
    let replica = status
        .instances
        .iter()
        .filter(usable)
        .filter(|i| {
            i.role == InstanceRole::Replica && i.ready && i.link_status == Some(LinkStatus::Up)
        })
        .max_by_key(|i| i.replication_offset.unwrap_or(-1));
    let master = || {
        let name = status.current_master.as_ref()?;
        let inst = status.instances.iter().find(|i| &i.name == name)?;
        (inst.role == InstanceRole::Master).then_some(inst)
    };
    let chosen = match target {
        BackupTarget::PreferReplica => replica.or_else(master),
        BackupTarget::Master => master(),
    }?;
    Some((
        chosen.name.clone(),
        Address::parse(chosen.address.as_deref()?)?,
    ))
}

/// Whether `pod` still serves a snapshot of the set as it did when the backup began: no
/// promotion since (`epoch`), and still an instance the target would choose.
fn confirm_source(
    status: Option<&RedisReplicationStatus>,
    epoch: i64,
    pod: &str,
    target: BackupTarget,
) -> Result<(), Error> {
    let status = status.cloned().unwrap_or_default();
    if status.epoch != epoch {
        return Err(Error::TopologyChanged(format!(
            "a new master was promoted (epoch {epoch} -> {})",
            status.epoch
        )));
    }
    let role = status
        .instances
        .iter()
        .find(|i| i.name == pod)
        .map(|i| i.role);
    let expected = if status.current_master.as_deref() == Some(pod) {
        InstanceRole::Master
    } else {
        InstanceRole::Replica
    };
    match (role, target) {
        (Some(r), BackupTarget::PreferReplica) if r == expected => Ok(()),
        (Some(InstanceRole::Master), BackupTarget::Master) if expected == InstanceRole::Master => {
            Ok(())
        }
        _ => Err(Error::TopologyChanged(format!("{pod} is now {role:?}"))),
    }
}

/// The client of `spec` with the keys its Secrets hold (in `namespace`).
pub async fn open_store(
    ctx: &Context,
    namespace: &str,
    spec: &ObjectStoreSpec,
) -> Result<Store, Error> {
    let creds = &spec.credentials;
    let field = "objectStore.credentials";
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).trim().to_string();
    let keys = Keys {
        access_key_id: text(
            secret_bytes(ctx, namespace, &creds.name, &creds.access_key_id_key, field).await?,
        ),
        secret_access_key: text(
            secret_bytes(
                ctx,
                namespace,
                &creds.name,
                &creds.secret_access_key_key,
                field,
            )
            .await?,
        ),
        ca: match &spec.ca {
            None => None,
            Some(ca) => {
                Some(secret_bytes(ctx, namespace, &ca.name, &ca.key, "objectStore.ca").await?)
            }
        },
    };
    Ok(Store::new(spec, &keys)?)
}

/// Runs the RedisBackup controller until a shutdown signal.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    let backups: Api<RedisBackup> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(backups, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(rb: Arc<RedisBackup>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(backup = %rb.name_any(), error = %error, "backup reconcile error");
    Action::requeue(RETRY_AFTER)
}

async fn reconcile(rb: Arc<RedisBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "backup",
        namespace = rb.namespace().unwrap_or_default(),
        name = rb.name_any()
    );
    reconcile_inner(&rb, &ctx).instrument(span).await
}

async fn reconcile_inner(rb: &RedisBackup, ctx: &Context) -> Result<Action, Error> {
    let mut status = rb.status.clone().unwrap_or_default();
    if matches!(
        status.phase,
        Some(BackupPhase::Completed | BackupPhase::Failed)
    ) || rb.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let ns = rb.namespace().unwrap_or_default();
    let name = rb.name_any();
    let api: Api<RedisBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let replications: Api<RedisReplication> = Api::namespaced(ctx.client.clone(), &ns);
    let rr_name = &rb.spec.replication;
    let rr = replications
        .get_opt(rr_name)
        .await
        .map_err(kube_error(format!(
            "reading RedisReplication {ns}/{rr_name}"
        )))?;
    // What cannot change by waiting fails the backup at once.
    let refusal = match &rr {
        None => Some(format!(
            "RedisReplication {rr_name} does not exist in namespace {ns}"
        )),
        Some(rr) if rr.spec.backup.is_none() => Some(format!(
            "RedisReplication {rr_name} has no spec.backup: add spec.backup.objectStore to say where backups go"
        )),
        _ => None,
    };
    let (Some(rr), None) = (rr, &refusal) else {
        let reason = refusal.unwrap_or_default();
        status.phase = Some(BackupPhase::Failed);
        status.error = Some(reason.clone());
        status.finished_at = Some(Time(Timestamp::now()));
        write_status(&api, &name, &status).await?;
        ctx.event_on(rb, EventType::Warning, "BackupFailed", "Backup", reason)
            .await;
        return Ok(Action::await_change());
    };
    let Some(spec) = rr.spec.backup.as_ref() else {
        return Ok(Action::await_change());
    };
    let target = rb.spec.target.unwrap_or(spec.target);
    let Some((pod, address)) = choose_source(&rr.status.clone().unwrap_or_default(), target) else {
        return wait(
            &api,
            &name,
            status,
            format!(
                "no instance of {rr_name} can serve a snapshot now (no master{}); waiting",
                if target == BackupTarget::PreferReplica {
                    " and no synced replica"
                } else {
                    ""
                }
            ),
        )
        .await;
    };
    let store = match open_store(ctx, &ns, &spec.object_store).await {
        Ok(store) => store,
        Err(e) => return wait(&api, &name, status, e.to_string()).await,
    };
    let credentials = match ctx.instance_credentials(&rr).await {
        Ok(credentials) => credentials,
        Err(e) => return wait(&api, &name, status, e.to_string()).await,
    };
    let dir = store::backup_dir(&spec.object_store, &ns, rr_name, &name);
    status.phase = Some(BackupPhase::Running);
    status.attempts += 1;
    status.started_at = status.started_at.or(Some(Time(Timestamp::now())));
    status.source = Some(pod.clone());
    status.object_store = Some(spec.object_store.clone());
    status.path = Some(dir.clone());
    status.bytes = 0;
    write_status(&api, &name, &status).await?;
    ctx.event_on(
        rb,
        EventType::Normal,
        "BackupStarted",
        "Backup",
        format!(
            "attempt {} from {pod} to s3://{}/{dir}",
            status.attempts, spec.object_store.bucket
        ),
    )
    .await;
    let attempt = take::Attempt {
        replication: format!("{ns}/{rr_name}"),
        backup: &name,
        pod: &pod,
        address: &address,
        credentials: &credentials,
        store: &store,
        dir: &dir,
    };
    let progress = |bytes: u64| {
        let api = api.clone();
        let name = name.clone();
        async move {
            let patch = serde_json::json!({"status": {"bytes": bytes}});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                warn!(error = %e, "could not report the backup's progress");
            }
        }
    };
    let epoch = rr.status.as_ref().map_or(0, |s| s.epoch);
    let confirm = || async {
        let now = replications.get(rr_name).await.map_err(kube_error(format!(
            "reading RedisReplication {ns}/{rr_name}"
        )))?;
        confirm_source(now.status.as_ref(), epoch, &pod, target)
    };
    match attempt.run(progress, confirm).await {
        Ok(manifest) => {
            status.phase = Some(BackupPhase::Completed);
            status.finished_at = Some(Time(Timestamp::now()));
            status.bytes = i64::try_from(manifest.bytes).unwrap_or(i64::MAX);
            status.sha256 = Some(manifest.sha256.clone());
            status.replication_id = Some(manifest.replication_id.clone());
            status.offset = Some(manifest.offset);
            status.error = None;
            write_status(&api, &name, &status).await?;
            ctx.event_on(
                rb,
                EventType::Normal,
                "BackupCompleted",
                "Backup",
                format!(
                    "{} bytes from {pod} at offset {} of {}, sha256 {}",
                    manifest.bytes, manifest.offset, manifest.replication_id, manifest.sha256
                ),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let last = status.attempts >= MAX_ATTEMPTS;
            status.phase = Some(if last {
                BackupPhase::Failed
            } else {
                BackupPhase::Pending
            });
            status.error = Some(e.to_string());
            if last {
                status.finished_at = Some(Time(Timestamp::now()));
            }
            write_status(&api, &name, &status).await?;
            let (reason, note) = if last {
                (
                    "BackupFailed",
                    format!(
                        "attempt {} of {MAX_ATTEMPTS} failed, giving up: {e}",
                        status.attempts
                    ),
                )
            } else {
                (
                    "BackupRetrying",
                    format!(
                        "attempt {} of {MAX_ATTEMPTS} failed, retrying from the current topology: {e}",
                        status.attempts
                    ),
                )
            };
            ctx.event_on(rb, EventType::Warning, reason, "Backup", note)
                .await;
            Ok(if last {
                Action::await_change()
            } else {
                Action::requeue(RETRY_AFTER)
            })
        }
    }
}

/// Pending with `why`, looked at again soon.
async fn wait(
    api: &Api<RedisBackup>,
    name: &str,
    mut status: RedisBackupStatus,
    why: String,
) -> Result<Action, Error> {
    if status.phase != Some(BackupPhase::Pending) || status.error.as_ref() != Some(&why) {
        status.phase = Some(BackupPhase::Pending);
        status.error = Some(why);
        write_status(api, name, &status).await?;
    }
    Ok(Action::requeue(RETRY_AFTER))
}

/// Writes the whole status of `name` (a RedisBackup or RedisScheduledBackup); `error`, when
/// cleared, is removed (merge patches skip absent fields).
pub(crate) async fn write_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.entry("error").or_insert(serde_json::Value::Null);
    }
    let patch = serde_json::json!({"status": value});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_error(format!("writing the status of {name}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InstanceStatus;

    fn instance(name: &str, role: InstanceRole, offset: i64, ready: bool) -> InstanceStatus {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "role": role.as_str(),
            "ready": ready,
            "address": format!("10.0.0.{}:6379", offset % 200),
            "replicationOffset": offset,
            "linkStatus": if role == InstanceRole::Replica { Some("up") } else { None },
        }))
        .expect("valid instance status")
    }

    fn status() -> RedisReplicationStatus {
        RedisReplicationStatus {
            current_master: Some("c-0".into()),
            instances: vec![
                instance("c-0", InstanceRole::Master, 100, true),
                instance("c-1", InstanceRole::Replica, 90, true),
                instance("c-2", InstanceRole::Replica, 99, true),
            ],
            ..RedisReplicationStatus::default()
        }
    }

    #[test]
    fn a_synced_replica_serves_the_snapshot_not_the_master() {
        let (pod, _) = choose_source(&status(), BackupTarget::PreferReplica).expect("source");
        assert_eq!(pod, "c-2", "the replica furthest along");
        let (pod, _) = choose_source(&status(), BackupTarget::Master).expect("source");
        assert_eq!(pod, "c-0");
    }

    #[test]
    fn fenced_or_unsynced_replicas_leave_it_to_the_master() {
        let mut st = status();
        st.fenced_instances = vec!["c-2".into()];
        st.instances[1].ready = false;
        let (pod, _) = choose_source(&st, BackupTarget::PreferReplica).expect("source");
        assert_eq!(pod, "c-0");
    }

    #[test]
    fn a_source_deposed_while_streaming_is_not_a_backup() {
        let st = status();
        assert!(confirm_source(Some(&st), 0, "c-2", BackupTarget::PreferReplica).is_ok());
        assert!(confirm_source(Some(&st), 0, "c-0", BackupTarget::Master).is_ok());
        let mut promoted = status();
        promoted.epoch = 1;
        let err = confirm_source(Some(&promoted), 0, "c-0", BackupTarget::Master);
        assert!(matches!(err, Err(Error::TopologyChanged(_))), "{err:?}");
        let mut fenced = status();
        fenced.instances[0].role = InstanceRole::Fenced;
        assert!(confirm_source(Some(&fenced), 0, "c-0", BackupTarget::Master).is_err());
    }

    #[test]
    fn no_master_no_replica_no_backup() {
        let mut st = status();
        st.instances.truncate(1);
        st.instances[0].role = InstanceRole::Unknown;
        assert!(choose_source(&st, BackupTarget::PreferReplica).is_none());
    }
}
