//! `--wait`: follows a requested switchover until the target is the recorded master, printing
//! each new step (on stderr), or fails with the operator's rejection or on the timeout.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::{Error, Session};
use crate::api::RedisReplicationStatus;
use crate::labels::SWITCHOVER_ANNOTATION;

const POLL: Duration = Duration::from_millis(500);
/// How long a request may be gone with no rejection seen and no master change started before
/// the wait gives up on it (the Event may be written a moment after the annotation is removed).
const GONE_GRACE: Duration = Duration::from_secs(5);

/// Reasons of the operator's Events that a wait shows; the first ends it with an error.
const REJECTED: &str = "SwitchoverRejected";
const FAILED: &str = "SwitchoverFailed";

/// The Events of the replication already there before the request, so that an earlier
/// rejection is not taken for an answer to this one.
pub struct Seen(BTreeSet<String>);

pub async fn seen_events(session: &Session, name: &str) -> Result<Seen, Error> {
    let events = switchover_events(session, name).await?;
    Ok(Seen(events.iter().map(fingerprint).collect()))
}

/// Waits until `target` is master. `seen`: the Events from before the request.
pub async fn switchover(
    session: &Session,
    name: &str,
    target: &str,
    timeout: Duration,
    mut seen: Seen,
) -> Result<(), Error> {
    let start = Instant::now();
    let mut last_step = String::new();
    let mut gone_since: Option<Instant> = None;
    loop {
        let rr = session.replication(name).await?;
        let status = rr.status.clone().unwrap_or_default();
        let requested = rr.annotations().contains_key(SWITCHOVER_ANNOTATION);
        if status.current_master.as_deref() == Some(target) && status.target_master.is_none() {
            eprintln!(
                "{:>5.1}s  {target} is the master (epoch {})",
                start.elapsed().as_secs_f64(),
                status.epoch
            );
            return Ok(());
        }
        for event in switchover_events(session, name).await? {
            if !seen.0.insert(fingerprint(&event)) {
                continue;
            }
            let reason = event.reason.clone().unwrap_or_default();
            let note = event.note.clone().unwrap_or_default();
            if reason == REJECTED {
                return Err(Error::Rejected {
                    target: target.to_string(),
                    message: note,
                });
            }
            eprintln!("{:>5.1}s  {reason}: {note}", start.elapsed().as_secs_f64());
        }
        let step = step(&status, requested, target);
        if step != last_step {
            eprintln!("{:>5.1}s  {step}", start.elapsed().as_secs_f64());
            last_step = step;
        }
        if requested || status.target_master.is_some() {
            gone_since = None;
        } else if gone_since.get_or_insert_with(Instant::now).elapsed() > GONE_GRACE {
            return Err(Error::Refused(format!(
                "the switchover request was removed but {target} is not the master ({}); see \
                 `kubectl vigil status {name}` and the Events of {name}",
                status.current_master.as_deref().unwrap_or("none recorded")
            )));
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                seconds: timeout.as_secs(),
                what: format!("{target} to become the master of {name} (last: {last_step})"),
            });
        }
        tokio::time::sleep(POLL).await;
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

async fn switchover_events(session: &Session, name: &str) -> Result<Vec<Event>, Error> {
    let api: Api<Event> = Api::namespaced(session.client.clone(), &session.namespace);
    let lp = ListParams::default().fields(&format!("regarding.name={name}"));
    let list = api
        .list(&lp)
        .await
        .map_err(|e| Error::api(format!("listing the Events of {name}"), e))?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("RedisReplication"))
                && matches!(e.reason.as_deref(), Some(REJECTED | FAILED))
        })
        .collect())
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

    fn status(v: serde_json::Value) -> RedisReplicationStatus {
        serde_json::from_value(v).expect("status")
    }

    #[test]
    fn steps_follow_the_status() {
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
