//! A plan as the ordered steps the executor runs. The order is where safety rules 1, 5 and 6
//! live, so it is data, built here and asserted by the planner's tests.

use super::{Intent, Plan, RequestOutcome, Rewire};

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Scale-down: the pod goes.
    RemoveInstance(String),
    /// A missing ordinal's claim (with storage) and pod are created.
    CreateInstance(u32),
    /// Hibernation: the pod goes, its claim stays.
    Stop(String),
    /// Rule 1: a stray master label goes before anyone is promoted.
    Unlabel(String),
    /// By request, once unlabelled: the instance follows nobody (read-only, its clients closed).
    Fence(String),
    /// Rule 5: the decision is in the status before any instance is touched.
    RecordIntent(Intent),
    /// `REPLICAOF NO ONE` (closing its clients), verified.
    Promote(String),
    /// Rule 7: `FAILOVER TO` on the old master, verified; its clients closed.
    SwitchOver {
        from: String,
        to: String,
    },
    /// `spec.replicaOf`: the designated master follows the external master (its clients closed).
    Follow(Rewire),
    /// Only once the promotion is verified.
    LabelMaster(String),
    /// Rule 6: an instance follows its upstream (its clients closed) before it is labelled.
    Rewire(Rewire),
    LabelReplica(String),
    /// A switchover or force-master request that is done or rejected loses its annotation.
    SettleRequests,
    /// Rolling update: an outdated instance is deleted, to be recreated from the current spec.
    Roll(String),
}

impl Plan {
    pub fn steps(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self
            .delete
            .iter()
            .cloned()
            .map(Step::RemoveInstance)
            .collect();
        steps.extend(self.stop.iter().cloned().map(Step::Stop));
        steps.extend(self.create.iter().copied().map(Step::CreateInstance));
        steps.extend(self.unlabel.iter().cloned().map(Step::Unlabel));
        steps.extend(self.fence.iter().cloned().map(Step::Fence));
        steps.extend(self.intent.clone().map(Step::RecordIntent));
        if let Some(to) = &self.promote {
            steps.push(match &self.switchover_from {
                Some(from) => Step::SwitchOver {
                    from: from.clone(),
                    to: to.clone(),
                },
                None => Step::Promote(to.clone()),
            });
        }
        steps.extend(self.follow.clone().map(Step::Follow));
        steps.extend(self.label_master.clone().map(Step::LabelMaster));
        steps.extend(self.rewire.iter().cloned().map(Step::Rewire));
        steps.extend(self.label_replicas.iter().cloned().map(Step::LabelReplica));
        let settled = |r: &Option<RequestOutcome>| {
            matches!(r, Some(RequestOutcome::Done | RequestOutcome::Rejected(_)))
        };
        if settled(&self.request) || settled(&self.force_request) {
            steps.push(Step::SettleRequests);
        }
        steps.extend(self.roll.clone().map(Step::Roll));
        steps
    }
}
