//! Events on transitions: the master's health, an unusable Secret, a pod that cannot run.

use std::collections::HashMap;

use kube::runtime::events::EventType;
use tracing::warn;

use super::Error;
use super::context::{Announced, Context};
use super::error::secret_problem;
use super::plan::{self, MasterDown, ObservedInstance};
use crate::api::RedisReplication;

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
}
