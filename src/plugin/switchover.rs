//! `kubectl vigil switchover NAME [--to POD]`: asks the operator for a planned switchover by
//! setting `redis.vigil.dev/switchover-to` (the operator carries it out without losing
//! acknowledged writes and removes the annotation, or rejects it with a `SwitchoverRejected`
//! Event). What to ask for is decided here from the recorded status, purely.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;

use super::request::{Edit, set};
use super::wait::{Check, Log, Observed, Watch};
use super::{Error, Session};
use crate::api::{InstanceRole, LinkStatus, RedisReplication, RedisReplicationStatus};
use crate::labels::{
    DEFAULT_PRIORITY, FORCE_MASTER_ANNOTATION, PRIORITY_ANNOTATION, SWITCHOVER_ANNOTATION,
};
use crate::resources::pod_ordinal;

/// Requests the switchover and returns its target.
pub async fn request(session: &Session, name: &str, to: Option<&str>) -> Result<String, Error> {
    let pods = priorities(&super::request::pods(session, name).await?);
    super::request::annotate(session, name, |rr| {
        let target = decide(rr, &pods, to)?;
        Ok(Edit {
            annotations: Some(set(SWITCHOVER_ANNOTATION, Some(target.clone()))),
            say: format!("switchover to {target} requested"),
            value: target,
        })
    })
    .await
}

/// The pods and their replica-priority (the operator never promotes 0).
pub fn priorities(pods: &[Pod]) -> BTreeMap<String, u32> {
    pods.iter()
        .map(|p| {
            let priority = p
                .annotations()
                .get(PRIORITY_ANNOTATION)
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_PRIORITY);
            (p.name_any(), priority)
        })
        .collect()
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
    super::request::no_change_of_master(rr)?;
    let status = rr.status.clone().unwrap_or_default();
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
                    known: super::request::known(pods.keys().cloned()),
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

/// How long a request may be gone with no rejection seen and no master change started before
/// the wait gives up on it (the Event may be written a moment after the annotation is removed).
const GONE_GRACE: Duration = Duration::from_secs(5);

/// Reasons of the operator's Events that a wait shows; the first ends it with an error.
const REJECTED: &str = "SwitchoverRejected";
const FAILED: &str = "SwitchoverFailed";

/// Follows a requested switchover until the target is the recorded master, showing the
/// operator's Events of it, or fails with its rejection.
pub struct Follow {
    target: String,
    /// The Events already shown, and those from before the request, so that an earlier
    /// rejection is not taken for an answer to this one.
    seen: BTreeSet<String>,
    gone_since: Option<Duration>,
}

impl Follow {
    /// Call before the request: notes the Events already there.
    pub async fn before(session: &Session, name: &str) -> Result<Self, Error> {
        let events = super::wait::events(session, name).await?;
        Ok(Self {
            target: String::new(),
            seen: events.iter().map(fingerprint).collect(),
            gone_since: None,
        })
    }

    pub async fn wait(
        mut self,
        session: &Session,
        name: &str,
        target: String,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.target = target;
        let what = format!("{} to become the master of {name}", self.target);
        let watch = Watch {
            events: true,
            ..Watch::default()
        };
        super::wait::until(session, name, &what, timeout, watch, |o, log| {
            self.check(o, log)
        })
        .await
    }

    fn check(&mut self, o: &Observed, log: &Log) -> Check {
        let name = o.rr.name_any();
        let target = self.target.as_str();
        let status = o.rr.status.clone().unwrap_or_default();
        let requested = o.rr.annotations().contains_key(SWITCHOVER_ANNOTATION);
        if status.current_master.as_deref() == Some(target) && status.target_master.is_none() {
            return Check::Done(format!("{target} is the master (epoch {})", status.epoch));
        }
        for event in &o.events {
            let reason = event.reason.clone().unwrap_or_default();
            if !matches!(reason.as_str(), REJECTED | FAILED)
                || !self.seen.insert(fingerprint(event))
            {
                continue;
            }
            let note = event.note.clone().unwrap_or_default();
            if reason == REJECTED {
                return Check::Failed(Error::Rejected {
                    target: target.to_string(),
                    message: note,
                });
            }
            log.line(&format!("{reason}: {note}"));
        }
        if requested || status.target_master.is_some() {
            self.gone_since = None;
        } else if log.elapsed() - *self.gone_since.get_or_insert(log.elapsed()) > GONE_GRACE {
            return Check::Failed(Error::Refused(format!(
                "the switchover request was removed but {target} is not the master ({}); see \
                 `kubectl vigil status {name}` and the Events of {name}",
                status.current_master.as_deref().unwrap_or("none recorded")
            )));
        }
        Check::Pending(step(&status, requested, target))
    }
}

/// One line on where the switchover stands, from the status.
pub fn step(status: &RedisReplicationStatus, requested: bool, target: &str) -> String {
    let pending = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SwitchoverPending" && c.status == "True");
    match (&status.target_master, pending) {
        (Some(t), _) => format!("handing over to {t} (epoch {})", status.epoch),
        (None, Some(c)) => format!("pending: {}", c.message),
        (None, None) if requested => format!(
            "requested: waiting for the operator to take up {target} (master {})",
            status.current_master.as_deref().unwrap_or("none")
        ),
        (None, None) => "the request is no longer on the replication".into(),
    }
}

/// An Event repeated by the recorder keeps its name and counts up its series.
fn fingerprint(e: &Event) -> String {
    format!(
        "{}/{:?}/{:?}",
        e.metadata.uid.as_deref().unwrap_or_default(),
        e.series.as_ref().map(|s| s.count),
        e.deprecated_count
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn steps_follow_the_status() {
        let status = |v: serde_json::Value| -> RedisReplicationStatus {
            serde_json::from_value(v).expect("status")
        };
        let pending = status(
            json!({"currentMaster": "cache-0", "epoch": 1, "conditions": [{
            "type": "SwitchoverPending", "status": "True", "reason": "TargetNotReady",
            "message": "waiting for cache-2 to be a synced replica of the master cache-0",
            "lastTransitionTime": "2025-01-02T03:04:05Z"}]}),
        );
        assert_eq!(
            step(&pending, true, "cache-2"),
            "pending: waiting for cache-2 to be a synced replica of the master cache-0"
        );
        let moving = status(
            json!({"currentMaster": "cache-0", "targetMaster": "cache-2",
            "epoch": 2}),
        );
        assert_eq!(
            step(&moving, false, "cache-2"),
            "handing over to cache-2 (epoch 2)"
        );
        let asked = status(json!({"currentMaster": "cache-0", "epoch": 1}));
        assert!(step(&asked, true, "cache-2").starts_with("requested"));
        assert!(step(&asked, false, "cache-2").contains("no longer"));
    }

    #[test]
    fn a_repeated_event_is_new_again() {
        let event = |count: i32| -> Event {
            serde_json::from_value(json!({
                "metadata": {"name": "cache.1", "uid": "u1"},
                "eventTime": "2025-01-02T03:04:05.000000Z",
                "reason": REJECTED,
                "series": {"count": count, "lastObservedTime": "2025-01-02T03:04:05.000000Z"},
            }))
            .expect("event")
        };
        assert_eq!(fingerprint(&event(2)), fingerprint(&event(2)));
        assert_ne!(fingerprint(&event(2)), fingerprint(&event(3)));
    }
}
