//! The restore of `spec.bootstrap.backup`: the backup is resolved (and its manifest read) before
//! any pod exists; then only the first instance runs, its agent loads the snapshot, and the
//! other instances are created once it serves as master with the data, so they sync from it.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::plan::ObservedInstance;
use super::status::{READY, put_condition};
use super::{Context, Error, execute};
use crate::api::{
    BackupPhase, RedisBackup, RedisReplication, RedisReplicationStatus, RestorePhase,
    RestoreSource, RestoreStatus,
};
use crate::redis::Credentials;
use crate::resources::REDIS_CONTAINER;

/// The condition that says what a restore did.
pub const RESTORED: &str = "Restored";

/// Where a replication stands with its bootstrap.
#[derive(Debug, PartialEq, Eq)]
pub enum Stage {
    /// No bootstrap, or the restore completed: the set runs as specified.
    Done,
    /// The backup is not resolved yet: no pod may start.
    Resolve,
    /// The first instance restores: it runs alone.
    Loading,
}

impl Stage {
    pub fn of(rr: &RedisReplication) -> Self {
        if rr.spec.bootstrap.is_none() {
            return Self::Done;
        }
        match rr.status.as_ref().and_then(|s| s.restore.as_ref()) {
            Some(r) if r.phase == RestorePhase::Completed => Self::Done,
            Some(r) if r.source.is_some() => Self::Loading,
            _ => Self::Resolve,
        }
    }
}

/// Finds the backup `spec.bootstrap` names and reads its manifest; records it as the restore's
/// source, or why it cannot be restored (retried: the backup may still be running). Returns
/// whether it was resolved.
pub async fn resolve(ctx: &Context, rr: &RedisReplication, ns: &str) -> Result<bool, Error> {
    let resolved = find_source(ctx, rr, ns).await;
    let mut status = rr.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let generation = rr.metadata.generation;
    let previous_error = status.restore.as_ref().and_then(|r| r.error.clone());
    let ok = resolved.is_ok();
    match resolved {
        Ok(source) => {
            let note = format!(
                "restoring {} bytes from s3://{}/{} (offset {} of {}) into the first instance",
                source.bytes,
                source.object_store.bucket,
                source.path,
                source.offset.unwrap_or(0),
                source.replication_id.as_deref().unwrap_or("?"),
            );
            status.restore = Some(RestoreStatus {
                phase: RestorePhase::Running,
                source: Some(source),
                keys: None,
                completed_at: None,
                error: None,
            });
            put_condition(
                &mut status.conditions,
                RESTORED,
                false,
                "Restoring",
                &note,
                generation,
                now,
            );
            execute::write_final_status(ctx, rr, ns, &status).await?;
            ctx.event(rr, EventType::Normal, "RestoreStarted", "Restore", note)
                .await;
        }
        Err(why) => {
            status.restore = Some(RestoreStatus {
                phase: RestorePhase::Failed,
                source: None,
                keys: None,
                completed_at: None,
                error: Some(why.clone()),
            });
            fail(&mut status, "BackupUnavailable", &why, generation, now);
            execute::write_final_status(ctx, rr, ns, &status).await?;
            if previous_error.as_ref() != Some(&why) {
                ctx.event(rr, EventType::Warning, "RestoreFailed", "Restore", why)
                    .await;
            }
        }
    }
    Ok(ok)
}

async fn find_source(
    ctx: &Context,
    rr: &RedisReplication,
    ns: &str,
) -> Result<RestoreSource, String> {
    let Some(bootstrap) = &rr.spec.bootstrap else {
        return Err("no spec.bootstrap".into());
    };
    let wanted = &bootstrap.backup;
    let (object_store, path, backup) = match (&wanted.name, &wanted.object_store, &wanted.path) {
        (Some(name), _, _) => {
            let backups: Api<RedisBackup> = Api::namespaced(ctx.client.clone(), ns);
            let found = backups
                .get_opt(name)
                .await
                .map_err(|e| format!("cannot read RedisBackup {ns}/{name}: {e}"))?
                .ok_or_else(|| format!("RedisBackup {name} does not exist in namespace {ns}"))?;
            let st = found.status.unwrap_or_default();
            match (st.phase, st.object_store, st.path) {
                (Some(BackupPhase::Completed), Some(store), Some(path)) => {
                    (store, path, Some(name.clone()))
                }
                (phase, ..) => {
                    return Err(format!(
                        "RedisBackup {name} is not completed (phase {}); the restore waits for it",
                        phase.map_or("none".to_string(), |p| format!("{p:?}"))
                    ));
                }
            }
        }
        (None, Some(store), Some(path)) => {
            (store.clone(), path.trim_matches('/').to_string(), None)
        }
        _ => return Err("spec.bootstrap.backup names no backup".into()),
    };
    let store = crate::backup::open_store(ctx, ns, &object_store)
        .await
        .map_err(|e| e.to_string())?;
    let manifest = store.manifest(&path).await.map_err(|e| e.to_string())?;
    Ok(RestoreSource {
        object_store,
        path,
        backup,
        bytes: i64::try_from(manifest.bytes).unwrap_or(i64::MAX),
        sha256: manifest.sha256,
        replication_id: Some(manifest.replication_id),
        offset: Some(manifest.offset),
    })
}

/// While the first instance restores: completed once it serves as master and has loaded its
/// data (its keys counted: a master still loading answers with the keys loaded so far),
/// failed with its agent's reason while it cannot.
pub async fn progress(
    ctx: &Context,
    rr: &RedisReplication,
    ns: &str,
    instances: &[ObservedInstance],
    credentials: &Credentials,
    status: &mut RedisReplicationStatus,
) {
    let Some(restore) = status.restore.as_mut() else {
        return;
    };
    let now = Timestamp::now();
    let first = instances.iter().find(|i| i.ordinal == 0);
    let serving = first.filter(|i| i.redis.as_ref().is_some_and(|r| r.is_master()));
    if let (Some(inst), Some(address)) = (serving, serving.and_then(ObservedInstance::address)) {
        let keys = match ctx.connect(&inst.name, &address, credentials).await {
            Ok(mut client) => client.loaded_keys().await.ok().flatten(),
            Err(_) => None,
        };
        let Some(keys) = keys else { return };
        restore.phase = RestorePhase::Completed;
        restore.keys = Some(keys);
        restore.completed_at = Some(Time(now));
        restore.error = None;
        let source = restore.source.as_ref();
        let note = format!(
            "restored {keys} keys ({} bytes, offset {} of {}) from s3://{}/{}",
            source.map_or(0, |s| s.bytes),
            source.and_then(|s| s.offset).unwrap_or(0),
            source
                .and_then(|s| s.replication_id.as_deref())
                .unwrap_or("?"),
            source.map_or("", |s| s.object_store.bucket.as_str()),
            source.map_or("", |s| s.path.as_str()),
        );
        put_condition(
            &mut status.conditions,
            RESTORED,
            true,
            "Restored",
            &note,
            rr.metadata.generation,
            now,
        );
        ctx.event(rr, EventType::Normal, "Restored", "Restore", note)
            .await;
        return;
    }
    let pods = ctx.pods.of_replication(ns, &rr.name_any());
    let failure = first
        .and_then(|i| pods.iter().find(|p| p.name_any() == i.name))
        .and_then(|p| restore_failure(p));
    if let Some(why) = failure
        && restore.error.as_ref() != Some(&why)
    {
        restore.phase = RestorePhase::Failed;
        restore.error = Some(why.clone());
        fail(status, "RestoreFailed", &why, rr.metadata.generation, now);
        ctx.event(rr, EventType::Warning, "RestoreFailed", "Restore", why)
            .await;
    }
}

/// The restore cannot go on: `Restored` says why (`reason`), and so does `Ready`.
fn fail(
    status: &mut RedisReplicationStatus,
    reason: &str,
    why: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    put_condition(
        &mut status.conditions,
        RESTORED,
        false,
        reason,
        why,
        generation,
        now,
    );
    put_condition(
        &mut status.conditions,
        READY,
        false,
        "RestoreFailed",
        why,
        generation,
        now,
    );
}

/// The agent's reason when the server container stopped because the restore failed.
fn restore_failure(pod: &Pod) -> Option<String> {
    let container = pod
        .status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == REDIS_CONTAINER)?;
    [container.state.as_ref(), container.last_state.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|s| s.terminated.as_ref()?.message.clone())
        .find(|m| m.starts_with("restore:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(bootstrap: bool, restore: Option<RestoreStatus>) -> RedisReplication {
        let mut spec = serde_json::json!({"instances": 3});
        if bootstrap {
            spec["bootstrap"] = serde_json::json!({"backup": {"name": "b1"}});
        }
        let mut rr = RedisReplication::new("cache", serde_json::from_value(spec).expect("spec"));
        rr.status = Some(RedisReplicationStatus {
            restore,
            ..RedisReplicationStatus::default()
        });
        rr
    }

    fn restore(phase: RestorePhase, resolved: bool) -> RestoreStatus {
        let source = serde_json::from_value(serde_json::json!({
            "objectStore": {"endpoint": "http://s3:9000", "bucket": "backups", "credentials": {"name": "s3"}},
            "path": "ns/cache/b1", "bytes": 10, "sha256": "abc",
        }))
        .expect("source");
        RestoreStatus {
            phase,
            source: resolved.then_some(source),
            keys: None,
            completed_at: None,
            error: None,
        }
    }

    #[test]
    fn pods_wait_for_a_resolved_backup_and_the_rest_for_its_load() {
        assert_eq!(Stage::of(&rr(false, None)), Stage::Done);
        assert_eq!(Stage::of(&rr(true, None)), Stage::Resolve);
        assert_eq!(
            Stage::of(&rr(true, Some(restore(RestorePhase::Failed, false)))),
            Stage::Resolve
        );
        assert_eq!(
            Stage::of(&rr(true, Some(restore(RestorePhase::Running, true)))),
            Stage::Loading
        );
        assert_eq!(
            Stage::of(&rr(true, Some(restore(RestorePhase::Failed, true)))),
            Stage::Loading,
            "a failed load keeps the set at its first instance"
        );
        assert_eq!(
            Stage::of(&rr(true, Some(restore(RestorePhase::Completed, true)))),
            Stage::Done
        );
    }

    #[test]
    fn the_agents_restore_reason_is_read_from_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cache-0"},
            "status": {"containerStatuses": [{
                "name": "redis", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "restore: the snapshot is corrupt"}},
            }]},
        }))
        .expect("pod");
        assert_eq!(
            restore_failure(&pod).as_deref(),
            Some("restore: the snapshot is corrupt")
        );
    }
}
