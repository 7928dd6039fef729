//! `kubectl vigil hibernate NAME on|off`: edits `redis.vigil.dev/hibernation`. `on` stops the
//! set (the replicas' pods go first, then the master's; claims, Secrets and the status naming
//! the master stay), `off` recreates the pods and the recorded master is master again with its
//! data. A set without claims, or whose instances write nothing to them, would lose its data:
//! the operator refuses it (`HibernationRefused`), and so does the plugin, before writing.

use std::time::Duration;

use kube::ResourceExt;

use super::request::{Edit, set};
use super::status::phase_name;
use super::wait::{Accepted, Check, Observed, Watch};
use super::{Error, Session};
use crate::api::requests::{HIBERNATION_ANNOTATION, hibernation_refusal, parse_hibernation};
use crate::api::{HibernationState, Phase, RedisReplication};

/// Asks the set to hibernate (`on`) or wake; waits at most `wait` for the outcome.
pub async fn run(
    session: &Session,
    name: &str,
    on: bool,
    wait: Option<Duration>,
) -> Result<(), Error> {
    let mut accepted = None;
    let master = super::request::annotate(session, name, |rr| {
        accepted = Some(Accepted::before(rr));
        decide(rr, on)
    })
    .await?;
    let Some(timeout) = wait else { return Ok(()) };
    let what = match on {
        true => format!("{name} to hibernate"),
        false => format!("{name} to wake"),
    };
    let watch = Watch {
        pods: true,
        accepted,
        ..Watch::default()
    };
    super::wait::until(session, name, &what, timeout, watch, |o, _| match on {
        true => hibernated(o),
        false => awake(o, master.as_deref()),
    })
    .await
}

/// The annotation to write; the value is the master recorded now, which must be master again
/// once awake.
pub fn decide(rr: &RedisReplication, on: bool) -> Result<Edit<Option<String>>, Error> {
    let name = rr.name_any();
    let status = rr.status.clone().unwrap_or_default();
    if on {
        hibernation_refusal(&rr.spec).map_or(Ok(()), |why| {
            Err(Error::Refused(format!(
                "hibernation of {name} refused (HibernationRefused): {why}"
            )))
        })?;
        super::request::no_change_of_master(rr)?;
    }
    let asked = rr
        .annotations()
        .get(HIBERNATION_ANNOTATION)
        .map(|v| parse_hibernation(v) == Ok(true));
    let unchanged = match (on, asked, status.hibernation) {
        (true, Some(true), state) => Some(format!(
            "{name} is already asked to hibernate ({})",
            state.map_or("not yet taken up".into(), |s| format!("{s:?}"))
        )),
        (false, None | Some(false), None) => Some(format!("{name} is not hibernating")),
        (false, None | Some(false), Some(state)) => {
            Some(format!("{name} is already asked to wake ({state:?})"))
        }
        _ => None,
    };
    let value = if on { "on" } else { "off" };
    Ok(Edit {
        say: unchanged.clone().unwrap_or_else(|| {
            format!(
                "{} requested ({HIBERNATION_ANNOTATION}={value})",
                if on { "hibernation" } else { "waking" }
            )
        }),
        annotations: match unchanged {
            Some(_) => None,
            None => Some(set(HIBERNATION_ANNOTATION, Some(value.into()))),
        },
        value: status.current_master,
    })
}

/// Hibernated: the status says so and no pod of the set is left.
pub fn hibernated(o: &Observed) -> Check {
    let status = o.rr.status.clone().unwrap_or_default();
    let desired = o.rr.spec.instances.max(0) as usize;
    let stopped = desired.saturating_sub(o.pods.len());
    if status.hibernation == Some(HibernationState::Hibernated) && o.pods.is_empty() {
        return Check::Done(format!(
            "hibernated: {desired}/{desired} pods stopped; claims and Secrets kept, master {} \
             recorded",
            status.current_master.as_deref().unwrap_or("none")
        ));
    }
    let state = status
        .hibernation
        .map_or("not yet taken up".into(), |s| format!("{s:?}"));
    Check::Pending(format!(
        "hibernating: {stopped}/{desired} pods stopped ({state})"
    ))
}

/// Awake: no hibernation in the status, every instance ready, the set Ready with `master` (the
/// one recorded before) as its master.
pub fn awake(o: &Observed, master: Option<&str>) -> Check {
    let status = o.rr.status.clone().unwrap_or_default();
    let desired = o.rr.spec.instances;
    let settled = status.hibernation.is_none()
        && status.phase == Some(Phase::Ready)
        && status.target_master.is_none()
        && status.ready_instances == desired;
    match (settled, status.current_master.as_deref()) {
        (true, now) if master.is_none() || now == master => Check::Done(format!(
            "awake: {desired}/{desired} pods ready, master {} (as before), phase Ready",
            now.unwrap_or("none")
        )),
        (true, now) => Check::Failed(Error::Refused(format!(
            "{} woke with master {} instead of {} (recorded before); see `kubectl vigil \
             status {}` and its Events",
            o.rr.name_any(),
            now.unwrap_or("none"),
            master.unwrap_or("none"),
            o.rr.name_any()
        ))),
        (false, _) => Check::Pending(format!(
            "waking: {}/{desired} pods ready ({})",
            status.ready_instances,
            status.hibernation.map_or_else(
                || format!("phase {}", phase_name(status.phase)),
                |s| format!("{s:?}")
            )
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::request::fixtures::{pods, replication, settled};
    use serde_json::{Value, json};

    fn stored() -> Value {
        json!({"instances": 3, "storage": {"size": "1Gi"}})
    }

    fn said(r: Result<Edit<Option<String>>, Error>) -> (bool, String) {
        match r {
            Ok(edit) => (edit.annotations.is_some(), edit.say),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_set_that_would_lose_its_data_is_refused() {
        let ephemeral = replication(json!({"instances": 3}), json!({}), settled());
        let e = decide(&ephemeral, true)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err(
                "hibernation of cache refused (HibernationRefused): it has no spec.storage: its \
                 data lives in the pods and would be lost with them"
                    .into()
            )
        );
        let none = replication(
            json!({"instances": 3, "storage": {"size": "1Gi"}, "persistence": "None"}),
            json!({}),
            settled(),
        );
        assert!(decide(&none, true).is_err_and(|e| e.to_string().contains("persistence")));
        // Waking needs no storage.
        assert!(decide(&ephemeral, false).is_ok());
        let fine = replication(stored(), json!({}), settled());
        let edit = decide(&fine, true).expect("accepted");
        assert_eq!(edit.value.as_deref(), Some("cache-0"));
        assert_eq!(
            edit.annotations.map(|a| a[HIBERNATION_ANNOTATION].clone()),
            Some(json!("on"))
        );
    }

    #[test]
    fn asking_twice_changes_nothing() {
        let asked = replication(stored(), json!({HIBERNATION_ANNOTATION: "on"}), settled());
        let (writes, say) = said(decide(&asked, true));
        assert!(
            !writes && say.contains("already asked to hibernate"),
            "{say}"
        );
        let (writes, _) = said(decide(&asked, false));
        assert!(writes);
        let awake = replication(stored(), json!({}), settled());
        let (writes, say) = said(decide(&awake, false));
        assert!(!writes && say == "cache is not hibernating", "{say}");
    }

    fn observed(status: Value, pods: Vec<k8s_openapi::api::core::v1::Pod>) -> Observed {
        Observed {
            rr: replication(stored(), json!({}), status),
            pods,
            events: Vec::new(),
        }
    }

    #[test]
    fn hibernated_means_no_pod_left() {
        let mut status = settled();
        status["hibernation"] = json!("Hibernating");
        let mut pods = pods();
        pods.truncate(1);
        match hibernated(&observed(status.clone(), pods)) {
            Check::Pending(step) => {
                assert_eq!(step, "hibernating: 2/3 pods stopped (Hibernating)")
            }
            _ => panic!("not yet"),
        }
        status["hibernation"] = json!("Hibernated");
        assert!(matches!(
            hibernated(&observed(status, Vec::new())),
            Check::Done(_)
        ));
    }

    #[test]
    fn awake_means_ready_with_the_same_master() {
        let mut waking = settled();
        waking["hibernation"] = json!("Waking");
        waking["readyInstances"] = json!(1);
        match awake(&observed(waking, pods()), Some("cache-0")) {
            Check::Pending(step) => assert_eq!(step, "waking: 1/3 pods ready (Waking)"),
            _ => panic!("not yet"),
        }
        let mut degraded = settled();
        degraded["phase"] = json!("Degraded");
        match awake(&observed(degraded, pods()), Some("cache-0")) {
            Check::Pending(step) => assert_eq!(step, "waking: 3/3 pods ready (phase Degraded)"),
            _ => panic!("not yet"),
        }
        assert!(matches!(
            awake(&observed(settled(), pods()), Some("cache-0")),
            Check::Done(_)
        ));
        let e = match awake(&observed(settled(), pods()), Some("cache-2")) {
            Check::Failed(e) => e.to_string(),
            _ => panic!("another master is a failure"),
        };
        assert!(
            e.contains("woke with master cache-0 instead of cache-2"),
            "{e}"
        );
    }
}
