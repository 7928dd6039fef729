//! `kubectl vigil restart NAME [POD]`: a rolling restart through the operator's own roll.
//! Without a pod it writes a new `redis.vigil.dev/restart` (a timestamp, as `kubectl rollout
//! restart` does) on the replication: every instance is replaced, replicas one at a time, the
//! master last after a switchover. With a pod it writes the same annotation on that pod alone
//! (a master first hands over). Refused while another change is under way, since a roll on top
//! of a change of master or of another roll would not be the one asked for.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::request::{Edit, set};
use super::status::phase_name;
use super::wait::{Accepted, Check, Observed, Watch};
use super::{Error, Session};
use crate::api::requests::{RESTART_ANNOTATION, RESTARTED_AT_ANNOTATION};
use crate::api::{Phase, RedisReplication};
use crate::labels::SWITCHOVER_ANNOTATION;

/// The condition of a rolling update under way (written by the operator).
const ROLLING_UPDATE: &str = "RollingUpdate";

/// Pod name -> the uid it had before the restart: replaced means another uid under the name.
pub type Before = BTreeMap<String, String>;

/// Restarts `pod`, or every instance; waits at most `wait` for the outcome.
pub async fn run(
    session: &Session,
    name: &str,
    pod: Option<&str>,
    wait: Option<Duration>,
) -> Result<(), Error> {
    let pods = super::request::pods(session, name).await?;
    let value = Timestamp::now().to_string();
    let mut accepted = None;
    let before = match pod {
        None => {
            super::request::annotate(session, name, |rr| {
                accepted = Some(Accepted::before(rr));
                decide(rr, &pods, &value)
            })
            .await?
        }
        Some(pod) => {
            let rr = session.replication(name).await?;
            idle(&rr, &pods)?;
            let target = super::request::instance(name, &pods, pod)?;
            accepted = Some(Accepted::before(&rr));
            let api: Api<Pod> = Api::namespaced(session.client.clone(), &session.namespace);
            let patch = json!({"metadata": {"annotations": {RESTART_ANNOTATION: value}}});
            api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::api(format!("annotating pod {pod}"), e))?;
            println!("pod/{pod}: restart requested ({RESTART_ANNOTATION}={value})");
            uids(std::slice::from_ref(target))
        }
    };
    let Some(timeout) = wait else { return Ok(()) };
    let what = format!(
        "{} restarted",
        before.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let watch = Watch {
        pods: true,
        accepted,
        ..Watch::default()
    };
    super::wait::until(session, name, &what, timeout, watch, |o, _| {
        restarted(o, &before)
    })
    .await
}

/// The annotation that restarts every instance, and their uids now.
pub fn decide(rr: &RedisReplication, pods: &[Pod], value: &str) -> Result<Edit<Before>, Error> {
    idle(rr, pods)?;
    Ok(Edit {
        annotations: Some(set(RESTART_ANNOTATION, Some(value.into()))),
        say: format!(
            "rolling restart of {} instances requested ({RESTART_ANNOTATION}={value})",
            pods.len()
        ),
        value: uids(pods),
    })
}

/// Refuses while anything would make the roll another one than asked for: a change of master,
/// a switchover asked for, a rolling update or restart under way, hibernation.
pub fn idle(rr: &RedisReplication, pods: &[Pod]) -> Result<(), Error> {
    let name = rr.name_any();
    super::request::awake(rr)?;
    super::request::no_change_of_master(rr)?;
    if let Some(to) = rr.annotations().get(SWITCHOVER_ANNOTATION) {
        return Err(Error::Refused(format!(
            "a switchover of {name} to {to} is requested ({SWITCHOVER_ANNOTATION}); wait for it"
        )));
    }
    let status = rr.status.clone().unwrap_or_default();
    if let Some(c) = status
        .conditions
        .iter()
        .find(|c| c.type_ == ROLLING_UPDATE && c.status == "True")
    {
        return Err(Error::Refused(format!(
            "a rolling update of {name} is under way ({}); wait for it to finish",
            c.message
        )));
    }
    let pending: Vec<String> = pods
        .iter()
        .filter(|p| p.annotations().contains_key(RESTART_ANNOTATION))
        .map(ResourceExt::name_any)
        .collect();
    if !pending.is_empty() {
        return Err(Error::Refused(format!(
            "a restart of {} is under way ({RESTART_ANNOTATION} on the pod); wait for it",
            pending.join(", ")
        )));
    }
    if let Some(asked) = rr.annotations().get(RESTART_ANNOTATION) {
        let behind = pods
            .iter()
            .filter(|p| p.annotations().get(RESTARTED_AT_ANNOTATION) != Some(asked))
            .count();
        if behind > 0 {
            return Err(Error::Refused(format!(
                "a rolling restart of {name} is under way ({behind}/{} instances not yet \
                 restarted for {RESTART_ANNOTATION}={asked}); wait for it",
                pods.len()
            )));
        }
    }
    Ok(())
}

fn uids(pods: &[Pod]) -> Before {
    pods.iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

/// Every pod of `before` is replaced (another uid) and Ready itself, and the set is Ready with
/// no change of master or roll left: the pod's own Ready, not the status, since the status
/// may still describe the pod it replaced.
pub fn restarted(o: &Observed, before: &Before) -> Check {
    let status = o.rr.status.clone().unwrap_or_default();
    let mut done: Vec<&Pod> = o
        .pods
        .iter()
        .filter(|p| {
            before
                .get(&p.name_any())
                .is_some_and(|old| p.uid().as_ref() != Some(old) && pod_ready(p))
        })
        .collect();
    done.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    let (n, total) = (done.len(), before.len());
    let settled = status.phase == Some(Phase::Ready)
        && status.target_master.is_none()
        && status.ready_instances == o.rr.spec.instances
        && status.updated_instances == o.rr.spec.instances;
    if n == total && settled {
        let which = match before.keys().next() {
            Some(pod) if total == 1 => pod.clone(),
            _ => "every instance".into(),
        };
        return Check::Done(format!(
            "{which} restarted ({n}/{total}); master {}, phase Ready",
            status.current_master.as_deref().unwrap_or("none")
        ));
    }
    let roll = status
        .conditions
        .iter()
        .find(|c| c.type_ == ROLLING_UPDATE && c.status == "True")
        .map_or_else(
            || match n == total {
                true => format!(
                    "waiting for the set to be Ready (phase {})",
                    phase_name(status.phase)
                ),
                false => "waiting for the operator to replace the next one".into(),
            },
            |c| c.message.clone(),
        );
    Check::Pending(match done.last() {
        Some(last) => format!("{} restarted ({n}/{total}); {roll}", last.name_any()),
        None => format!("restarting: 0/{total} restarted; {roll}"),
    })
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::request::fixtures::{pod, pods, replication, settled};
    use serde_json::Value;

    fn rr(annotations: Value, status: Value) -> RedisReplication {
        replication(json!({"instances": 3}), annotations, status)
    }

    fn refused(rr: &RedisReplication, pods: &[Pod]) -> String {
        match decide(rr, pods, "2025-01-02T03:04:05Z") {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_restart_is_a_new_annotation_and_the_uids_now() {
        let edit =
            decide(&rr(json!({}), settled()), &pods(), "2025-01-02T03:04:05Z").expect("accepted");
        assert_eq!(
            edit.annotations.map(|a| a[RESTART_ANNOTATION].clone()),
            Some(json!("2025-01-02T03:04:05Z"))
        );
        assert_eq!(edit.value.get("cache-1").map(String::as_str), Some("u1"));
        // A finished restart does not stand in the way of the next.
        let done = |at: &str| {
            pod(
                "cache-0",
                "u0",
                Some("master"),
                json!({RESTARTED_AT_ANNOTATION: at}),
            )
        };
        let finished = rr(json!({RESTART_ANNOTATION: "t1"}), settled());
        assert!(decide(&finished, &[done("t1")], "t2").is_ok());
        let e = refused(&finished, &[done("t0")]);
        assert!(
            e.contains("rolling restart of cache is under way (1/1"),
            "{e}"
        );
    }

    #[test]
    fn changes_under_way_refuse_a_restart() {
        let mut rolling = settled();
        rolling["conditions"] = json!([{"type": ROLLING_UPDATE, "status": "True",
            "reason": "InstancesOutdated", "message": "2/3 instances run the current spec",
            "lastTransitionTime": "2025-01-02T03:04:05Z"}]);
        let e = refused(&rr(json!({}), rolling), &pods());
        assert!(
            e.contains("rolling update of cache is under way (2/3"),
            "{e}"
        );
        let mut moving = settled();
        moving["targetMaster"] = json!("cache-1");
        assert!(refused(&rr(json!({}), moving), &pods()).contains("in progress"));
        let asked = rr(json!({SWITCHOVER_ANNOTATION: "cache-1"}), settled());
        assert!(refused(&asked, &pods()).contains("switchover"));
        let mut one = pods();
        one[2] = pod(
            "cache-2",
            "u2",
            Some("replica"),
            json!({RESTART_ANNOTATION: "t"}),
        );
        assert!(refused(&rr(json!({}), settled()), &one).contains("restart of cache-2"));
    }

    fn ready(mut p: Pod) -> Pod {
        p.status =
            serde_json::from_value(json!({"conditions": [{"type": "Ready", "status": "True"}]}))
                .expect("pod status");
        p
    }

    #[test]
    fn restarted_means_new_ready_pods_and_a_ready_set() {
        let before = uids(&pods());
        let observed = |pods: Vec<Pod>, status: Value| Observed {
            rr: rr(json!({}), status),
            pods,
            events: Vec::new(),
        };
        let step = |c: Check| match c {
            Check::Pending(s) => s,
            _ => panic!("not yet"),
        };
        let same = pods().into_iter().map(ready).collect();
        assert!(
            step(restarted(&observed(same, settled()), &before)).starts_with("restarting: 0/3")
        );
        let mut one = pods();
        one[2] = ready(pod("cache-2", "n2", Some("replica"), json!({})));
        // A new pod not yet Ready is not restarted yet.
        one[1] = pod("cache-1", "n1", Some("replica"), json!({}));
        assert!(
            step(restarted(&observed(one, settled()), &before))
                .starts_with("cache-2 restarted (1/3)")
        );
        let all: Vec<Pod> = ["cache-0", "cache-1", "cache-2"]
            .iter()
            .map(|n| ready(pod(n, &format!("new-{n}"), Some("replica"), json!({}))))
            .collect();
        let mut degraded = settled();
        degraded["phase"] = json!("Degraded");
        assert!(step(restarted(&observed(all.clone(), degraded), &before)).contains("3/3"));
        match restarted(&observed(all, settled()), &before) {
            Check::Done(m) => assert_eq!(
                m,
                "every instance restarted (3/3); master cache-0, phase Ready"
            ),
            _ => panic!("done"),
        }
    }
}
