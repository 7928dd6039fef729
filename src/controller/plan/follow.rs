//! A set that follows an external master (`spec.replicaOf`, disaster recovery). Its recorded
//! master is the *designated* master: it replicates from the source, the other instances from
//! it, and nobody is promoted. Replacing the designated master loses nothing (the set takes no
//! writes; everything comes from the source), so a failed one is replaced after downAfter with
//! no corroboration or fence. Removing `replicaOf` promotes the designated master (`detach`).

use super::decide::{self, dead_now, first_master, moved_address};
use super::{
    Change, Decision, MasterDown, MasterState, ObservedInstance, Plan, PlanInput, RequestOutcome,
    Rewire, best_candidate,
};
use crate::redis::Address;

/// `spec.replicaOf` as resolved this round.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// The source master's address.
    At(Address),
    /// The source cannot be located now (its Sentinel does not answer, ...): why.
    Unresolved(String),
}

impl Source {
    pub fn address(&self) -> Option<&Address> {
        match self {
            Self::At(address) => Some(address),
            Self::Unresolved(_) => None,
        }
    }
}

const NO_REQUESTS: &str = "the set follows an external master (spec.replicaOf); remove \
                           spec.replicaOf to promote it first";

/// Who the designated master is.
pub(super) fn decide(input: &PlanInput, leaving: &[String]) -> Decision {
    let mut d = designated(input, leaving);
    let rejected = || Some(RequestOutcome::Rejected(NO_REQUESTS.into()));
    if input.switchover_to.is_some() {
        d.request = rejected();
    }
    if input.force_master.is_some() {
        d.force_request = rejected();
    }
    d
}

fn designated(input: &PlanInput, leaving: &[String]) -> Decision {
    let recorded = &input.recorded;
    let Some(name) = recorded.current_master.as_deref() else {
        return first_master(input, leaving).map_or_else(Decision::default, |first| {
            Decision::designate(first, recorded.epoch, Change::Bootstrap)
        });
    };
    let inst = input.instances.iter().find(|i| i.name == name);
    let stays = |i: &ObservedInstance| {
        !i.deleting && !leaving.contains(&i.name) && i.ordinal < input.desired_instances
    };
    match inst {
        Some(i) if i.redis.is_some() && stays(i) && !input.fencing.fences(name) => {
            match rolling_handover(input, i, leaving) {
                Some(d) => d,
                None => moved_address(input, i),
            }
        }
        _ => replace(input, name, inst, leaving),
    }
}

/// The designated master does not answer, is going, or is fenced by request: another instance
/// takes its place once it is certainly gone, or has been silent for downAfter.
fn replace(
    input: &PlanInput,
    name: &str,
    inst: Option<&ObservedInstance>,
    leaving: &[String],
) -> Decision {
    let policy = &input.policy;
    let gone = inst.is_none_or(|i| {
        i.deleting || leaving.contains(&i.name) || i.ordinal >= input.desired_instances
    }) || input.fencing.fences(name);
    let evidence = match (gone, dead_now(inst)) {
        (true, _) => format!("{name} leaves the set or is fenced"),
        (false, Some(evidence)) => evidence,
        (false, None) if policy.master_unreachable_for.unwrap_or_default() >= policy.down_after => {
            format!(
                "{name} has not answered for {}ms",
                policy.down_after.as_millis()
            )
        }
        (false, None) => return Decision::unavailable(name, MasterDown::Suspected, None),
    };
    let reason = evidence.clone();
    let down = MasterDown::Objective { evidence };
    if !policy.enabled {
        return Decision::unavailable(name, down, Some("failover is disabled".into()));
    }
    match best_candidate(input, leaving, Some(name), |_| true) {
        Some(next) => {
            let mut d = Decision::designate(
                next,
                input.recorded.epoch,
                Change::Failover {
                    from: name.to_string(),
                    reason,
                },
            );
            d.down = Some(down);
            d
        }
        None => Decision::unavailable(
            name,
            down,
            Some("no reachable instance can follow the source in its place".into()),
        ),
    }
}

/// Rolling update (rule 8): the designated master goes last; the replica a switchover would
/// pick takes its place first (no `FAILOVER`: nobody is master), so the old one is then rolled
/// as a replica.
fn rolling_handover(
    input: &PlanInput,
    master: &ObservedInstance,
    leaving: &[String],
) -> Option<Decision> {
    let (next, reason) = decide::rolling_handover(input, master, leaving)?;
    let change = Change::Switchover {
        from: master.name.clone(),
        reason,
    };
    Some(Decision::designate(next, input.recorded.epoch, change))
}

/// The designated master must follow the source, once the others' roles are planned.
pub(super) fn plan_follow(input: &PlanInput, plan: &mut Plan) {
    let (Some(source), MasterState::Acting { name, .. }) = (
        input.following.as_ref().and_then(Source::address),
        &plan.master,
    ) else {
        return;
    };
    let follows = input
        .instances
        .iter()
        .find(|i| &i.name == name)
        .and_then(|i| i.redis.as_ref())
        .is_some_and(|r| r.following() == Some(source));
    if !follows {
        plan.follow = Some(Rewire {
            name: name.clone(),
            upstream: source.clone(),
        });
    }
}

/// `spec.replicaOf` was removed: the designated master, reachable and staying, is promoted with
/// everything it received (its replicas hold no more: they follow it). `None` when it is master
/// already, or cannot be reached (the usual rules then apply).
pub(super) fn detach(
    input: &PlanInput,
    inst: Option<&ObservedInstance>,
    leaving: &[String],
) -> Option<Decision> {
    let inst = inst?;
    let info = inst.redis.as_ref()?;
    if !input.recorded.following
        || info.is_master()
        || inst.deleting
        || leaving.contains(&inst.name)
        || input.fencing.fences(&inst.name)
    {
        return None;
    }
    Some(Decision::promote(
        inst,
        input.recorded.epoch,
        Change::Detached,
    ))
}
