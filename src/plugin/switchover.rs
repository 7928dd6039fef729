//! `kubectl vigil switchover NAME [--to POD]`: asks the operator for a planned switchover by
//! setting `redis.vigil.dev/switchover-to` (the operator carries it out without losing
//! acknowledged writes and removes the annotation, or rejects it with a `SwitchoverRejected`
//! Event). What to ask for is decided here from the recorded status, purely.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Error, Session};
use crate::api::{InstanceRole, LinkStatus, RedisReplication, RedisReplicationStatus};
use crate::labels::{
    DEFAULT_PRIORITY, FORCE_MASTER_ANNOTATION, PRIORITY_ANNOTATION, REPLICATION_LABEL,
    SWITCHOVER_ANNOTATION,
};
use crate::resources::pod_ordinal;

/// Requests the switchover and returns its target.
pub async fn request(session: &Session, name: &str, to: Option<&str>) -> Result<String, Error> {
    let rr = session.replication(name).await?;
    let pods = instance_priorities(session, name).await?;
    let target = decide(&rr, &pods, to)?;
    // The resourceVersion makes the patch conditional: a request or change made meanwhile by
    // someone else is not silently overwritten.
    let patch = json!({"metadata": {
        "resourceVersion": rr.resource_version(),
        "annotations": {SWITCHOVER_ANNOTATION: target},
    }});
    match session
        .replications()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(target),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Refused(format!(
            "redisreplication {name} changed while the switchover was requested; look at \
             `kubectl vigil status {name}` and try again"
        ))),
        Err(e) => Err(Error::api(
            format!("annotating redisreplication {}/{name}", session.namespace),
            e,
        )),
    }
}

/// The replication's pods and their replica-priority (the operator never promotes 0).
pub async fn instance_priorities(
    session: &Session,
    name: &str,
) -> Result<BTreeMap<String, u32>, Error> {
    let pods: Api<Pod> = Api::namespaced(session.client.clone(), &session.namespace);
    let lp = ListParams::default().labels(&format!("{REPLICATION_LABEL}={name}"));
    let list = pods
        .list(&lp)
        .await
        .map_err(|e| Error::api(format!("listing the pods of {name}"), e))?;
    Ok(list
        .items
        .iter()
        .map(|p| {
            let priority = p
                .annotations()
                .get(PRIORITY_ANNOTATION)
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_PRIORITY);
            (p.name_any(), priority)
        })
        .collect())
}

/// The pod to ask for, or why no switchover can be asked for now. `pods` maps the
/// replication's pods to their replica-priority.
pub fn decide(
    rr: &RedisReplication,
    pods: &BTreeMap<String, u32>,
    to: Option<&str>,
) -> Result<String, Error> {
    let name = rr.name_any();
    let annotations = rr.annotations();
    if let Some(pending) = annotations.get(SWITCHOVER_ANNOTATION) {
        return Err(Error::Refused(format!(
            "a switchover of {name} to {pending} is already requested ({SWITCHOVER_ANNOTATION}); \
             wait for it, or remove the annotation to withdraw it"
        )));
    }
    if let Some(forced) = annotations.get(FORCE_MASTER_ANNOTATION) {
        return Err(Error::Refused(format!(
            "{name} has a force-master request for {forced} pending ({FORCE_MASTER_ANNOTATION})"
        )));
    }
    let status = rr.status.clone().unwrap_or_default();
    if let Some(target) = &status.target_master {
        return Err(Error::Refused(format!(
            "a change of master of {name} is in progress (to {target}, epoch {}); wait for it \
             to finish",
            status.epoch
        )));
    }
    let Some(master) = status.current_master.as_deref() else {
        return Err(Error::Refused(format!(
            "{name} has no master recorded yet; nothing to switch over from"
        )));
    };
    match to {
        Some(pod) => {
            let Some(priority) = pods.get(pod) else {
                return Err(Error::NoSuchPod {
                    pod: pod.to_string(),
                    replication: name,
                    known: known(pods),
                });
            };
            if pod == master {
                return Err(Error::Refused(format!(
                    "{pod} is already the master of {name}"
                )));
            }
            if *priority == 0 {
                return Err(Error::Refused(format!(
                    "{pod} has {PRIORITY_ANNOTATION}=0 and is never promoted"
                )));
            }
            Ok(pod.to_string())
        }
        None => best_replica(&name, &status, pods).ok_or_else(|| {
            Error::Refused(format!(
                "{name} has no synced replica to switch over to (ready, link up, \
                 replica-priority above 0); see `kubectl vigil status {name}`"
            ))
        }),
    }
}

/// The best synced replica as the status shows it: ready with its link up and promotable, the
/// greatest replication offset, then the lowest ordinal.
pub fn best_replica(
    replication: &str,
    status: &RedisReplicationStatus,
    pods: &BTreeMap<String, u32>,
) -> Option<String> {
    status
        .instances
        .iter()
        .filter(|i| {
            Some(i.name.as_str()) != status.current_master.as_deref()
                && i.role == InstanceRole::Replica
                && i.ready
                && i.link_status == Some(LinkStatus::Up)
                && pods.get(&i.name).is_some_and(|p| *p > 0)
        })
        .max_by_key(|i| {
            let ordinal = pod_ordinal(replication, &i.name).unwrap_or(u32::MAX);
            (
                i.replication_offset.unwrap_or(-1),
                std::cmp::Reverse(ordinal),
            )
        })
        .map(|i| i.name.clone())
}

fn known(pods: &BTreeMap<String, u32>) -> String {
    if pods.is_empty() {
        "it has no pods".into()
    } else {
        let names: Vec<&str> = pods.keys().map(String::as_str).collect();
        format!("its pods: {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replication(annotations: serde_json::Value, status: serde_json::Value) -> RedisReplication {
        serde_json::from_value(json!({
            "apiVersion": "redis.vigil.dev/v1alpha1", "kind": "RedisReplication",
            "metadata": {"name": "cache", "annotations": annotations},
            "spec": {"instances": 4},
            "status": status,
        }))
        .expect("fixture")
    }

    fn replica(name: &str, offset: i64, ready: bool, link: &str) -> serde_json::Value {
        json!({"name": name, "role": "replica", "ready": ready, "replicationOffset": offset,
            "linkStatus": link})
    }

    fn settled() -> serde_json::Value {
        json!({
            "currentMaster": "cache-1", "epoch": 2,
            "instances": [
                {"name": "cache-1", "role": "master", "ready": true, "replicationOffset": 900},
                replica("cache-0", 800, true, "up"),
                replica("cache-3", 900, true, "up"),
                replica("cache-2", 900, true, "up"),
            ],
        })
    }

    fn pods() -> BTreeMap<String, u32> {
        (0..4).map(|i| (format!("cache-{i}"), 100)).collect()
    }

    #[test]
    fn the_greatest_offset_wins_then_the_lowest_ordinal() {
        let rr = replication(json!({}), settled());
        assert_eq!(decide(&rr, &pods(), None).ok().as_deref(), Some("cache-2"));
    }

    #[test]
    fn unsynced_and_unpromotable_replicas_are_passed_over() {
        let mut status = settled();
        status["instances"][3] = replica("cache-2", 900, true, "down");
        let rr = replication(json!({}), status.clone());
        assert_eq!(decide(&rr, &pods(), None).ok().as_deref(), Some("cache-3"));
        let mut pods = pods();
        pods.insert("cache-3".into(), 0);
        assert_eq!(decide(&rr, &pods, None).ok().as_deref(), Some("cache-0"));
        status["instances"][1] = replica("cache-0", 800, false, "up");
        let rr = replication(json!({}), status);
        let refused = decide(&rr, &pods, None).map_err(|e| e.to_string());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("no synced replica")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_named_target_must_be_a_pod_of_the_set() {
        let rr = replication(json!({}), settled());
        assert_eq!(
            decide(&rr, &pods(), Some("cache-0")).ok().as_deref(),
            Some("cache-0")
        );
        let missing = decide(&rr, &pods(), Some("nosuchpod")).map_err(|e| e.to_string());
        assert_eq!(
            missing,
            Err(
                "pod \"nosuchpod\" is not an instance of redisreplication \"cache\" \
                 (its pods: cache-0, cache-1, cache-2, cache-3)"
                    .into()
            )
        );
        let master = decide(&rr, &pods(), Some("cache-1")).map_err(|e| e.to_string());
        assert!(
            master
                .as_ref()
                .is_err_and(|e| e.contains("already the master")),
            "{master:?}"
        );
    }

    #[test]
    fn a_change_in_progress_refuses_a_new_request() {
        let mut status = settled();
        status["targetMaster"] = json!("cache-3");
        let rr = replication(json!({}), status);
        let e = decide(&rr, &pods(), None).map_err(|e| e.to_string());
        assert!(
            e.as_ref()
                .is_err_and(|e| e.contains("in progress (to cache-3")),
            "{e:?}"
        );
        let rr = replication(json!({SWITCHOVER_ANNOTATION: "cache-0"}), settled());
        let e = decide(&rr, &pods(), Some("cache-2")).map_err(|e| e.to_string());
        assert!(
            e.as_ref().is_err_and(|e| e.contains("already requested")),
            "{e:?}"
        );
        let rr = replication(json!({FORCE_MASTER_ANNOTATION: "cache-0"}), settled());
        assert!(decide(&rr, &pods(), None).is_err());
        let rr = replication(json!({}), json!({"epoch": 0}));
        let e = decide(&rr, &pods(), None).map_err(|e| e.to_string());
        assert!(
            e.as_ref().is_err_and(|e| e.contains("no master recorded")),
            "{e:?}"
        );
    }
}
