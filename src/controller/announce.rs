//! Events on transitions: the master's health, an unusable Secret, a pod that cannot run, the
//! user's fencing and hibernation requests.

use std::collections::HashMap;

use kube::runtime::events::EventType;
use tracing::warn;

use super::Error;
use super::context::{Announced, Context};
use super::error::secret_problem;
use super::plan::{self, MasterDown, ObservedInstance};
use crate::api::{HibernationState, RedisReplication, RedisReplicationStatus};

impl Context {
    /// Events on transitions only: MasterDown (+sdown), MasterObjectivelyDown (+odown).
    pub(super) async fn announce_master_health(&self, rr: &RedisReplication, plan: &plan::Plan) {
        let now = match &plan.master_down {
            Some(MasterDown::Subjective) => Some(Announced::Subjective),
            Some(MasterDown::Objective { .. }) => Some(Announced::Objective),
            _ => None,
        };
        let before = self.remember(rr, |m| std::mem::replace(&mut m.announced, now));
        if now == before {
            return;
        }
        let master = rr
            .status
            .as_ref()
            .and_then(|s| s.current_master.clone())
            .unwrap_or_default();
        match &plan.master_down {
            Some(MasterDown::Subjective) => {
                let note = format!("master {master} does not answer the operator's probes");
                self.event(rr, EventType::Warning, "MasterDown", "Probe", note)
                    .await;
            }
            Some(MasterDown::Objective { evidence }) => {
                let note = format!("master {master} is down: {evidence}");
                self.event(
                    rr,
                    EventType::Warning,
                    "MasterObjectivelyDown",
                    "Probe",
                    note,
                )
                .await;
            }
            _ => {}
        }
    }

    /// Remembers whether the Secrets are usable, with a Warning Event when one stops being.
    pub(super) async fn announce_secret_problem(
        &self,
        rr: &RedisReplication,
        error: Option<&Error>,
    ) {
        let now = error.and_then(secret_problem);
        let before = self.remember(rr, |m| {
            std::mem::replace(&mut m.secret_problem, now.clone())
        });
        if let Some((reason, message)) = now
            && before.as_ref().map(|(r, _)| r) != Some(&reason)
        {
            warn!(reason, message = %message, "Secret unusable");
            self.event(rr, EventType::Warning, reason, "ReadSecret", message)
                .await;
        }
    }

    /// A Warning Event when a pod becomes stuck or is stuck for another reason.
    pub(super) async fn announce_pod_problems(
        &self,
        rr: &RedisReplication,
        instances: &[ObservedInstance],
    ) {
        let now: HashMap<String, String> = instances
            .iter()
            .filter_map(|i| Some((i.name.clone(), i.problem.as_ref()?.reason.clone())))
            .collect();
        let before = self.remember(rr, |m| std::mem::replace(&mut m.pod_problems, now.clone()));
        for inst in instances {
            let Some(problem) = &inst.problem else {
                continue;
            };
            if before.get(&inst.name) == Some(&problem.reason) {
                continue;
            }
            warn!(pod = %inst.name, reason = %problem.reason, message = %problem.message, "instance cannot run");
            self.pod_event(
                rr,
                EventType::Warning,
                &inst.name,
                "InstanceFailing",
                "Observe",
                format!("{}: {}: {}", inst.name, problem.reason, problem.message),
            )
            .await;
        }
    }

    /// Events as the status moves: instances fenced and unfenced, a hibernation starting,
    /// done and lifted, and a request refused.
    pub(super) async fn announce_requests(
        &self,
        rr: &RedisReplication,
        before: &RedisReplicationStatus,
        now: &RedisReplicationStatus,
    ) {
        let changed = |from: &[String], to: &[String]| {
            to.iter()
                .filter(|n| !from.contains(n))
                .cloned()
                .collect::<Vec<_>>()
        };
        let fenced = changed(&before.fenced_instances, &now.fenced_instances);
        if !fenced.is_empty() {
            let note = format!(
                "{} fenced by request: read-only, out of the Services, never promoted; the data \
                 is kept",
                fenced.join(", ")
            );
            self.event(rr, EventType::Normal, "Fenced", "Fence", note)
                .await;
        }
        let unfenced = changed(&now.fenced_instances, &before.fenced_instances);
        if !unfenced.is_empty() {
            let note = format!("{} unfenced: rejoining the set", unfenced.join(", "));
            self.event(rr, EventType::Normal, "Unfenced", "Unfence", note)
                .await;
        }
        if before.hibernation != now.hibernation {
            let note = match now.hibernation {
                Some(HibernationState::Hibernating) => Some((
                    "Hibernating",
                    "stopping every pod, replicas first; claims, Secrets and the master are kept",
                )),
                Some(HibernationState::Hibernated) => Some(("Hibernated", "no pod runs")),
                Some(HibernationState::Waking) => Some(("Waking", "starting the pods again")),
                None => Some(("Woken", "the recorded master is master again")),
            };
            if let Some((reason, note)) = note {
                self.event(rr, EventType::Normal, reason, "Hibernate", note.to_string())
                    .await;
            }
        }
        let refused = |s: &RedisReplicationStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == super::status::REQUESTS_ACCEPTED && c.status == "False")
                .map(|c| (c.reason.clone(), c.message.clone()))
        };
        if let Some((reason, message)) = refused(now)
            && refused(before).as_ref() != Some(&(reason.clone(), message.clone()))
        {
            self.event(rr, EventType::Warning, &reason, "Request", message)
                .await;
        }
    }
}
