//! `kubectl vigil fence | unfence NAME POD|--all`: edits `redis.vigil.dev/fenced-instances`.
//! The operator takes a fenced instance out of both Services (its role label goes), makes it
//! read-only following nobody, and never promotes it; a fenced master leaves the set without
//! writes until it is unfenced. What to write and when the outcome holds are decided here,
//! purely, from the object and the pods.
//!
//! Fencing a pod already fenced (or unfencing one that is not) changes nothing, says so and
//! succeeds, still waiting for the outcome: the exit status says whether the state asked for
//! holds, not whether this command wrote it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::request::{Edit, set};
use super::status::phase_name;
use super::wait::{Accepted, Check, Observed, Watch};
use super::{Error, Session};
use crate::api::requests::{FENCED_INSTANCES_ANNOTATION, Fencing};
use crate::api::{InstanceRole, InstanceStatus, LinkStatus, Phase, RedisReplication};
use crate::labels::ROLE_LABEL;

/// Fences (or, `fence` false, unfences) `pod` or, with `None`, every instance; waits at most
/// `wait` for the outcome.
pub async fn run(
    session: &Session,
    name: &str,
    pod: Option<&str>,
    fence: bool,
    wait: Option<Duration>,
) -> Result<(), Error> {
    let pods = super::request::pods(session, name).await?;
    let mut accepted = None;
    let targets = super::request::annotate(session, name, |rr| {
        accepted = Some(Accepted::before(rr));
        decide(rr, &pods, pod, fence)
    })
    .await?;
    let Some(timeout) = wait else { return Ok(()) };
    let verb = if fence { "fenced" } else { "unfenced" };
    let what = format!("{} {verb}", targets.join(", "));
    let watch = Watch {
        pods: true,
        accepted,
        ..Watch::default()
    };
    super::wait::until(session, name, &what, timeout, watch, |o, _| match fence {
        true => fenced(o, &targets),
        false => unfenced(o, &targets),
    })
    .await
}

/// The annotation to write and the instances whose outcome to wait for.
pub fn decide(
    rr: &RedisReplication,
    pods: &[Pod],
    pod: Option<&str>,
    fence: bool,
) -> Result<Edit<Vec<String>>, Error> {
    let name = rr.name_any();
    super::request::awake(rr)?;
    super::request::no_change_of_master(rr)?;
    if let Some(pod) = pod {
        super::request::instance(&name, pods, pod)?;
    }
    let current = match rr.annotations().get(FENCED_INSTANCES_ANNOTATION) {
        None => Fencing::None,
        Some(value) => Fencing::parse(value).map_err(|e| {
            Error::Refused(format!(
                "{name} carries an unusable fencing request: {e}; fix it or remove it with \
                 `kubectl annotate redisreplication {name} {FENCED_INSTANCES_ANNOTATION}-`"
            ))
        })?,
    };
    let mut every: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
    every.sort();
    let (next, targets, unchanged) = match (fence, pod) {
        (true, Some(pod)) => (
            current.clone().with(Some(pod)),
            vec![pod.to_string()],
            format!("{pod} is already fenced"),
        ),
        (true, None) => (
            Fencing::All,
            every,
            "every instance is already fenced".into(),
        ),
        (false, Some(pod)) => (
            current.clone().without(Some(pod), &every),
            vec![pod.to_string()],
            format!("{pod} is not fenced"),
        ),
        (false, None) => {
            let fenced = every.into_iter().filter(|p| current.fences(p)).collect();
            (Fencing::None, fenced, "no instance is fenced".into())
        }
    };
    if next == current {
        return Ok(Edit {
            annotations: None,
            say: format!("{unchanged} ({FENCED_INSTANCES_ANNOTATION} unchanged)"),
            value: targets,
        });
    }
    let value = next.to_annotation();
    let say = format!(
        "{} {} requested ({FENCED_INSTANCES_ANNOTATION}={})",
        if fence { "fencing" } else { "unfencing" },
        match pod {
            Some(pod) => pod.to_string(),
            None => "every instance".into(),
        },
        value.as_deref().unwrap_or("removed")
    );
    Ok(Edit {
        annotations: Some(set(FENCED_INSTANCES_ANNOTATION, value)),
        say,
        value: targets,
    })
}

/// Every target is fenced: listed in `status.fencedInstances`, reported in role `fenced`, and
/// without a role label (so in neither Service).
pub fn fenced(o: &Observed, targets: &[String]) -> Check {
    let status = o.rr.status.clone().unwrap_or_default();
    let waiting: Vec<String> = targets
        .iter()
        .filter_map(|pod| {
            let listed = status.fenced_instances.contains(pod);
            let role = instance(&status.instances, pod).map(|i| i.role);
            let label = role_label(&o.pods, pod);
            let done = listed && role == Some(InstanceRole::Fenced) && label.is_none();
            (!done).then(|| {
                format!(
                    "{pod}: {}listed as fenced, role {}, role label {}",
                    if listed { "" } else { "not " },
                    role.map_or("unknown", InstanceRole::as_str),
                    label.unwrap_or("removed")
                )
            })
        })
        .collect();
    match (waiting.first(), targets) {
        (None, [pod]) => Check::Done(format!("{pod} fenced (role fenced, out of the Services)")),
        (None, _) => Check::Done(format!(
            "{} fenced (role fenced, out of the Services)",
            targets.join(", ")
        )),
        (Some(first), _) => Check::Pending(format!(
            "fencing: {}/{} fenced; {first}",
            targets.len() - waiting.len(),
            targets.len()
        )),
    }
}

/// Every target serves again: no longer listed as fenced and labelled for its Service; a
/// replica ready and linked, the master master again with the set Ready (or, while other
/// instances stay fenced, no longer Fenced).
pub fn unfenced(o: &Observed, targets: &[String]) -> Check {
    let status = o.rr.status.clone().unwrap_or_default();
    let master = status.current_master.as_deref();
    let phase_ok = match status.fenced_instances.is_empty() {
        true => status.phase == Some(Phase::Ready),
        false => !matches!(status.phase, Some(Phase::Fenced | Phase::Hibernated)),
    };
    let waiting: Vec<String> = targets
        .iter()
        .filter_map(|pod| {
            let i = instance(&status.instances, pod);
            let label = role_label(&o.pods, pod);
            let is_master = Some(pod.as_str()) == master;
            let serving = match (i, is_master) {
                (Some(i), true) => i.role == InstanceRole::Master && i.ready && phase_ok,
                (Some(i), false) => {
                    i.role == InstanceRole::Replica
                        && i.ready
                        && i.link_status == Some(LinkStatus::Up)
                }
                (None, _) => false,
            };
            let done = !status.fenced_instances.contains(pod) && label.is_some() && serving;
            (!done).then(|| {
                format!(
                    "{pod}: role {}{}, role label {}{}",
                    i.map_or("unknown", |i| i.role.as_str()),
                    match i {
                        Some(i) if i.ready => ", ready",
                        _ => ", not ready",
                    },
                    label.unwrap_or("none"),
                    match (is_master, status.phase) {
                        (true, Some(phase)) => format!(", phase {phase:?}"),
                        _ => String::new(),
                    }
                )
            })
        })
        .collect();
    let roles = |pod: &String| match Some(pod.as_str()) == master {
        true => format!("{pod} master again"),
        false => format!("{pod} a ready, linked replica"),
    };
    match waiting.first() {
        None if targets.is_empty() => Check::Done("no instance was fenced".into()),
        None => Check::Done(format!(
            "unfenced: {}; phase {}",
            targets.iter().map(roles).collect::<Vec<_>>().join(", "),
            phase_name(status.phase)
        )),
        Some(first) => Check::Pending(format!(
            "unfencing: {}/{} serving again; {first}",
            targets.len() - waiting.len(),
            targets.len()
        )),
    }
}

fn instance<'a>(instances: &'a [InstanceStatus], pod: &str) -> Option<&'a InstanceStatus> {
    instances.iter().find(|i| i.name == pod)
}

fn role_label<'a>(pods: &'a [Pod], pod: &str) -> Option<&'a str> {
    pods.iter()
        .find(|p| p.name_any() == pod)
        .and_then(|p| p.labels().get(ROLE_LABEL))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::request::fixtures::{pod, pods, replication, settled};
    use serde_json::{Value, json};

    fn rr(annotations: Value, status: Value) -> RedisReplication {
        replication(json!({"instances": 3}), annotations, status)
    }

    fn written(edit: &Edit<Vec<String>>) -> Option<Value> {
        edit.annotations
            .as_ref()
            .map(|a| a[FENCED_INSTANCES_ANNOTATION].clone())
    }

    #[test]
    fn fencing_adds_to_the_list_and_unfencing_takes_away() {
        let edit = decide(&rr(json!({}), settled()), &pods(), Some("cache-1"), true).expect("ok");
        assert_eq!(written(&edit), Some(json!("[\"cache-1\"]")));
        assert_eq!(edit.value, ["cache-1"]);
        let one = rr(
            json!({FENCED_INSTANCES_ANNOTATION: "[\"cache-1\"]"}),
            settled(),
        );
        let edit = decide(&one, &pods(), Some("cache-2"), true).expect("ok");
        assert_eq!(written(&edit), Some(json!("[\"cache-1\",\"cache-2\"]")));
        // The last one unfenced removes the annotation.
        let edit = decide(&one, &pods(), Some("cache-1"), false).expect("ok");
        assert_eq!(written(&edit), Some(Value::Null));
        let edit = decide(&one, &pods(), None, true).expect("ok");
        assert_eq!(written(&edit), Some(json!("[\"*\"]")));
        assert_eq!(edit.value, ["cache-0", "cache-1", "cache-2"]);
        // Unfencing one of all names the others.
        let all = rr(json!({FENCED_INSTANCES_ANNOTATION: "[\"*\"]"}), settled());
        let edit = decide(&all, &pods(), Some("cache-0"), false).expect("ok");
        assert_eq!(written(&edit), Some(json!("[\"cache-1\",\"cache-2\"]")));
        let edit = decide(&all, &pods(), None, false).expect("ok");
        assert_eq!(written(&edit), Some(Value::Null));
        assert_eq!(edit.value, ["cache-0", "cache-1", "cache-2"]);
    }

    #[test]
    fn nothing_to_change_is_said_and_not_written() {
        let one = rr(
            json!({FENCED_INSTANCES_ANNOTATION: "[\"cache-1\"]"}),
            settled(),
        );
        let edit = decide(&one, &pods(), Some("cache-1"), true).expect("ok");
        assert!(edit.annotations.is_none());
        assert!(
            edit.say.starts_with("cache-1 is already fenced"),
            "{}",
            edit.say
        );
        let edit = decide(&one, &pods(), Some("cache-2"), false).expect("ok");
        assert!(
            edit.say.starts_with("cache-2 is not fenced"),
            "{}",
            edit.say
        );
        let all = rr(json!({FENCED_INSTANCES_ANNOTATION: "[\"*\"]"}), settled());
        assert!(
            decide(&all, &pods(), None, true)
                .expect("ok")
                .annotations
                .is_none()
        );
        let none = rr(json!({}), settled());
        let edit = decide(&none, &pods(), None, false).expect("ok");
        assert!(edit.annotations.is_none() && edit.value.is_empty());
    }

    #[test]
    fn bad_pods_bad_annotations_and_changes_in_progress_are_refused() {
        let e = |rr: &RedisReplication, pod: Option<&str>| {
            decide(rr, &pods(), pod, true)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let missing = e(&rr(json!({}), settled()), Some("cache-7"));
        assert!(
            missing
                .as_ref()
                .is_err_and(|m| m.contains("\"cache-7\" is not an instance")),
            "{missing:?}"
        );
        let bad = e(
            &rr(json!({FENCED_INSTANCES_ANNOTATION: "cache-1"}), settled()),
            Some("cache-1"),
        );
        assert!(
            bad.as_ref()
                .is_err_and(|m| m.contains("unusable fencing request")),
            "{bad:?}"
        );
        let mut moving = settled();
        moving["targetMaster"] = json!("cache-1");
        assert!(e(&rr(json!({}), moving), Some("cache-2")).is_err());
        let mut hibernated = settled();
        hibernated["hibernation"] = json!("Hibernated");
        assert!(e(&rr(json!({}), hibernated), None).is_err());
    }

    fn observed(status: Value, pods: Vec<Pod>) -> Observed {
        Observed {
            rr: rr(json!({}), status),
            pods,
            events: Vec::new(),
        }
    }

    fn pending(check: Check) -> String {
        match check {
            Check::Pending(step) => step,
            Check::Done(m) => panic!("done: {m}"),
            Check::Failed(e) => panic!("failed: {e}"),
        }
    }

    fn done(check: Check) -> String {
        match check {
            Check::Done(m) => m,
            Check::Pending(step) => panic!("pending: {step}"),
            Check::Failed(e) => panic!("failed: {e}"),
        }
    }

    fn fenced_replica() -> (Value, Vec<Pod>) {
        let mut status = settled();
        status["fencedInstances"] = json!(["cache-1"]);
        status["instances"][1] = json!({"name": "cache-1", "role": "fenced", "ready": false});
        let mut pods = pods();
        pods[1] = pod("cache-1", "u1", None, json!({}));
        (status, pods)
    }

    #[test]
    fn a_fence_holds_once_listed_fenced_and_unlabelled() {
        let targets = ["cache-1".to_string()];
        let step = pending(fenced(&observed(settled(), pods()), &targets));
        assert_eq!(
            step,
            "fencing: 0/1 fenced; cache-1: not listed as fenced, role replica, role label replica"
        );
        let (status, mut pods) = fenced_replica();
        assert_eq!(
            done(fenced(&observed(status.clone(), pods.clone()), &targets)),
            "cache-1 fenced (role fenced, out of the Services)"
        );
        // Still labelled: still in the replicas Service.
        pods[1] = pod("cache-1", "u1", Some("replica"), json!({}));
        assert!(pending(fenced(&observed(status, pods), &targets)).contains("role label replica"));
    }

    #[test]
    fn an_unfence_holds_once_the_instance_serves_again() {
        let targets = ["cache-1".to_string()];
        let (status, pods_fenced) = fenced_replica();
        let step = pending(unfenced(&observed(status, pods_fenced), &targets));
        assert!(
            step.starts_with("unfencing: 0/1 serving again; cache-1: role fenced"),
            "{step}"
        );
        assert_eq!(
            done(unfenced(&observed(settled(), pods()), &targets)),
            "unfenced: cache-1 a ready, linked replica; phase Ready"
        );
        // The master: master again and the set Ready.
        let master = ["cache-0".to_string()];
        let mut status = settled();
        status["phase"] = json!("Fenced");
        let step = pending(unfenced(&observed(status, pods()), &master));
        assert!(step.contains("phase Fenced"), "{step}");
        assert_eq!(
            done(unfenced(&observed(settled(), pods()), &master)),
            "unfenced: cache-0 master again; phase Ready"
        );
    }
}
