//! The planner: a pure function from what was observed to what must be done.
//!
//! It decides which pods to create or remove, which instance is master (bootstrap, failover,
//! switchover), recording that intent before anything is touched, who must follow the master,
//! and which role labels pods carry. Nothing here talks to Kubernetes or Redis, so every decision
//! of the safety rules (DESIGN §4) is unit-tested.

use crate::redis::Address;

mod decide;
mod follow;
mod hibernation;
mod input;
mod recovery;
mod roles;

use decide::{best_candidate, cooldown_message, decide, offset};
use roles::{plan_roles, plan_roll};
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod follow_tests;
#[cfg(test)]
mod requests_tests;
mod steps;
#[cfg(test)]
mod tests;

pub use follow::Source;
pub use input::{FailoverPolicy, ObservedInstance, PlanInput, PodProblem, RecordedRoles};
pub use steps::Step;

/// The master decision that must be written to status before any instance is touched.
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    pub master: String,
    pub address: Address,
    pub epoch: i64,
    /// A promotion follows; `false` when only the master's address changed.
    pub promotes: bool,
    /// Recorded with the master: who takes the role back once refilled (see `Change::Refill`).
    pub hand_back_to: Option<String>,
}

/// Why the master changes in this plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The first master of the set.
    Bootstrap,
    /// The recorded master failed; `from` is replaced.
    Failover { from: String, reason: String },
    /// Planned: the master hands over without losing writes (its pod is being deleted, a
    /// scale-down or rolling update removes it, or the user asked).
    Switchover { from: String, reason: String },
    /// Failover is disabled and the recorded master restarted with at least the data of every
    /// replica: it is master again.
    Restore,
    /// The recorded master, fenced or hibernated by request, is asked back and holds at least
    /// the data of every other instance: it is master again.
    Reinstated,
    /// Failover is disabled and the recorded master `master` restarted with `missing_bytes` less
    /// than a replica: that replica serves as master while `master` is refilled from it, then
    /// hands the role back (rule 2: less data never overwrites more).
    Refill { master: String, missing_bytes: i64 },
    /// The user forced this master (`redis.vigil.dev/force-master`): the others resync from it
    /// and discard up to `discarded_bytes` they held beyond it.
    Forced { discarded_bytes: i64 },
    /// An interrupted promotion (intent recorded, promotion not verified) is finished.
    Resume,
    /// `spec.replicaOf` was removed: the designated master stops following the external master
    /// and becomes writable with everything it had received.
    Detached,
    /// An interrupted change is undone: `master` still acts as master and the target it named
    /// cannot take over without losing its writes, so `master` stays.
    RolledBack { target: String },
}

/// The recorded master's health, as rule 3 judges it.
#[derive(Clone, Debug, PartialEq)]
pub enum MasterDown {
    /// Unreachable for less than `downAfter`.
    Suspected,
    /// Unreachable for `downAfter`, but nothing corroborates it (only the operator is cut off).
    Subjective,
    /// Unreachable for `downAfter` and corroborated.
    Objective { evidence: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum MasterState {
    /// The master is known and acting.
    Acting { name: String, address: Address },
    /// No instance is reachable yet to become the first master.
    AwaitingBootstrap,
    /// The recorded master is fenced by request: no writes, and no failover replaces it.
    Fenced { name: String },
    /// The set hibernates: no instance serves.
    Hibernating,
    /// The recorded master is not acting and no change is made this round.
    Unavailable {
        name: String,
        down: MasterDown,
        why_no_failover: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Ordinals whose pods must be created.
    pub create: Vec<u32>,
    /// Pods to remove because the set is scaling down.
    pub delete: Vec<String>,
    /// The master cannot be removed by a scale-down (yet): why.
    pub scale_down_blocked: Option<String>,
    pub master: MasterState,
    /// The recorded master's health when it is not acting (for events and status).
    pub master_down: Option<MasterDown>,
    /// The status must record the master silent (`masterSilentSince`, rule 9): it has not
    /// answered for so long that the promotion hold, counted from the record, ends at downAfter.
    pub record_silence: bool,
    pub change: Option<Change>,
    /// Written to status (optimistically) before any step below.
    pub intent: Option<Intent>,
    /// Pods whose role label must go before anything else (rule 1).
    pub unlabel: Vec<String>,
    /// `FAILOVER TO <promote>` on this instance instead of `REPLICAOF NO ONE` on the target.
    pub switchover_from: Option<String>,
    /// Becomes master: promoted and verified.
    pub promote: Option<String>,
    /// The designated master of a set that follows an external master (`spec.replicaOf`) is
    /// pointed at it (its clients closed).
    pub follow: Option<Rewire>,
    /// Labelled master once the promotion is verified.
    pub label_master: Option<String>,
    /// Must `REPLICAOF` their upstream (a demoted master also loses its clients).
    pub rewire: Vec<Rewire>,
    /// Labelled replica, after they follow the master (rule 6).
    pub label_replicas: Vec<String>,
    /// Fenced by request: made to follow nobody (their clients closed), once unlabelled.
    pub fence: Vec<String>,
    /// Hibernation: pods deleted, their claims kept.
    pub stop: Vec<String>,
    /// What becomes of the user's switchover request.
    pub request: Option<RequestOutcome>,
    /// What becomes of the user's force-master request.
    pub force_request: Option<RequestOutcome>,
    /// Deleted for the rolling update (recreated from the current spec by a later round).
    pub roll: Option<String>,
}

/// A replica to point at its upstream: the master, or its predecessor in a chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Rewire {
    pub name: String,
    pub upstream: Address,
}

/// What becomes of a switchover the user asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum RequestOutcome {
    /// Carried out this round, or already true: the request is done.
    Done,
    /// It can never be carried out as asked: dropped, with this reason.
    Rejected(String),
    /// It waits (for the target to be synced, ...): why.
    Waiting(String),
}

impl Plan {
    /// Whether carrying the plan out changes anything (pods, labels, roles, status intent):
    /// its effects are then observed before the next decision.
    pub fn acts(&self) -> bool {
        self.intent.is_some()
            || self.promote.is_some()
            || self.follow.is_some()
            || self.roll.is_some()
            || !self.create.is_empty()
            || !self.delete.is_empty()
            || !self.unlabel.is_empty()
            || !self.rewire.is_empty()
            || self.label_master.is_some()
            || !self.label_replicas.is_empty()
            || !self.fence.is_empty()
            || !self.stop.is_empty()
    }

    /// A plan that changes nothing, with this master state.
    fn idle(master: MasterState) -> Self {
        Self {
            create: Vec::new(),
            delete: Vec::new(),
            scale_down_blocked: None,
            master,
            master_down: None,
            record_silence: false,
            change: None,
            intent: None,
            unlabel: Vec::new(),
            switchover_from: None,
            promote: None,
            follow: None,
            label_master: None,
            rewire: Vec::new(),
            label_replicas: Vec::new(),
            fence: Vec::new(),
            stop: Vec::new(),
            request: None,
            force_request: None,
            roll: None,
        }
    }
}

pub fn plan(input: &PlanInput) -> Plan {
    if input.hibernate {
        return hibernation::plan_hibernation(input);
    }
    let (create, delete, scale_down_blocked) = plan_membership(input);
    let decision = match input.following {
        Some(_) => follow::decide(input, &delete),
        None => decide(input, &delete),
    };
    let mut plan = Plan {
        create,
        delete,
        scale_down_blocked,
        record_silence: record_silence(input, decision.down.as_ref()),
        master_down: decision.down,
        change: decision.change,
        intent: decision.intent,
        switchover_from: decision.switchover_from,
        promote: decision.promote,
        request: decision.request,
        force_request: decision.force_request,
        ..Plan::idle(decision.master.unwrap_or(MasterState::AwaitingBootstrap))
    };
    if let Some(intent) = &mut plan.intent {
        intent.hand_back_to = recovery::hand_back_after(input, &plan.change, intent);
    }
    plan_roles(input, &mut plan);
    follow::plan_follow(input, &mut plan);
    plan.roll = plan_roll(input, &plan);
    plan
}

fn record_silence(input: &PlanInput, down: Option<&MasterDown>) -> bool {
    let policy = &input.policy;
    let since = crate::isolation::record_silence_after(policy.down_after);
    match down {
        None => false,
        // A blip shorter than that is not worth taking the apiserver's word from the master.
        Some(MasterDown::Suspected) => policy.master_unreachable_for.unwrap_or_default() >= since,
        Some(_) => true,
    }
}

/// Pods to create (missing ordinals) and remove (ordinals beyond `instances`, never the master).
fn plan_membership(input: &PlanInput) -> (Vec<u32>, Vec<String>, Option<String>) {
    let create = (0..input.desired_instances)
        .filter(|o| input.instances.iter().all(|i| i.ordinal != *o))
        .collect();
    let master = input.recorded.current_master.as_deref();
    let mut delete = Vec::new();
    let mut blocked = None;
    for inst in &input.instances {
        if inst.ordinal < input.desired_instances || inst.deleting {
            continue;
        }
        if Some(inst.name.as_str()) == master {
            blocked = Some(format!(
                "scaling down to {} instances removes the master {}: it hands over to a synced \
                 replica first",
                input.desired_instances, inst.name
            ));
        } else {
            delete.push(inst.name.clone());
        }
    }
    (create, delete, blocked)
}

#[derive(Default)]
struct Decision {
    master: Option<MasterState>,
    down: Option<MasterDown>,
    change: Option<Change>,
    intent: Option<Intent>,
    switchover_from: Option<String>,
    promote: Option<String>,
    request: Option<RequestOutcome>,
    force_request: Option<RequestOutcome>,
}

impl Decision {
    fn acting(inst: &ObservedInstance) -> Self {
        match inst.address() {
            Some(address) => Self {
                master: Some(MasterState::Acting {
                    name: inst.name.clone(),
                    address,
                }),
                ..Self::default()
            },
            None => Self::unavailable(&inst.name, MasterDown::Suspected, None),
        }
    }

    fn unavailable(name: &str, down: MasterDown, why: Option<String>) -> Self {
        Self {
            master: Some(MasterState::Unavailable {
                name: name.to_string(),
                down: down.clone(),
                why_no_failover: why,
            }),
            down: Some(down),
            ..Self::default()
        }
    }

    /// `to` becomes master at the next epoch.
    fn promote(to: &ObservedInstance, epoch: i64, change: Change) -> Self {
        let mut d = Self::designate(to, epoch, change);
        if let Some(intent) = &mut d.intent {
            intent.promotes = true;
            d.promote = Some(to.name.clone());
        }
        d
    }

    /// `to` is recorded master from the next epoch, not promoted: the designated master of a set
    /// that follows an external one (`follow`), or the first step of `promote`.
    fn designate(to: &ObservedInstance, epoch: i64, change: Change) -> Self {
        let Some(address) = to.address() else {
            return Self::unavailable(&to.name, MasterDown::Suspected, None);
        };
        Self {
            master: Some(MasterState::Acting {
                name: to.name.clone(),
                address: address.clone(),
            }),
            intent: Some(Intent {
                master: to.name.clone(),
                address,
                epoch: epoch + 1,
                promotes: false,
                hand_back_to: None,
            }),
            change: Some(change),
            ..Self::default()
        }
    }
}
