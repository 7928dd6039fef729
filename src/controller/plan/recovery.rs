//! A master that comes back, an interrupted change, and the user's request to force a master:
//! the decisions in which data could be lost, so each keeps rule 2 — no automatic path lets an
//! instance with less data overwrite instances with more. Discarding data takes the explicit
//! `redis.vigil.dev/force-master` request.

use super::{
    Change, Decision, Intent, MasterDown, MasterState, ObservedInstance, PlanInput, RequestOutcome,
    best_candidate, cooldown_message, offset,
};
use crate::redis::Role;

/// The reachable instance other than `name`, staying in the set and not in a full sync, that
/// holds the most data.
fn most_elsewhere<'a>(
    input: &'a PlanInput,
    name: &str,
    leaving: &[String],
) -> Option<&'a ObservedInstance> {
    input
        .instances
        .iter()
        .filter(|i| i.name != name && !i.deleting && !leaving.contains(&i.name))
        .filter(|i| {
            i.redis.as_ref().is_some_and(|r| {
                !matches!(
                    r.role,
                    Role::Replica {
                        sync_in_progress: true,
                        ..
                    }
                )
            })
        })
        .max_by_key(|i| offset(i))
}

/// The recorded master restarted: it boots fenced and never takes writes on its own (rule 2).
/// Whoever holds the most data leads: with failover, the best replica is promoted; without, the
/// master is master again if it lost nothing, else it is refilled from the replica that has
/// more, which serves as master meanwhile and hands the role back (`hand_back`).
pub(super) fn restarted_master(
    input: &PlanInput,
    inst: &ObservedInstance,
    leaving: &[String],
) -> Decision {
    let epoch = input.recorded.epoch;
    let down = MasterDown::Objective {
        evidence: format!("{} restarted and is no longer master", inst.name),
    };
    let mut d = restarted_decision(input, inst, leaving, epoch, &down);
    d.down = Some(down);
    d
}

fn restarted_decision(
    input: &PlanInput,
    inst: &ObservedInstance,
    leaving: &[String],
    epoch: i64,
    down: &MasterDown,
) -> Decision {
    let own = offset(inst);
    let richest = most_elsewhere(input, &inst.name, leaving).filter(|r| offset(r) > own);
    let candidate = best_candidate(input, leaving, Some(&inst.name), |_| true);
    let waiting = |holder: &ObservedInstance| {
        Decision::unavailable(
            &inst.name,
            down.clone(),
            Some(format!(
                "{} restarted with {} bytes less than {}, which cannot be promoted to keep them \
                 (replica-priority 0, or not reachable yet); annotate the replication with \
                 redis.vigil.dev/force-master={} to discard that data",
                inst.name,
                offset(holder) - own,
                holder.name,
                inst.name
            )),
        )
    };
    // Fenced or hibernated by request and now asked back: no failure happened, so the master
    // keeps its role unless another instance holds more.
    if richest.is_none() && input.recorded.master_resumes(input, &inst.name) {
        return Decision::promote(inst, epoch, Change::Reinstated);
    }
    if !input.policy.enabled {
        return match (richest, candidate) {
            (None, _) => Decision::promote(inst, epoch, Change::Restore),
            (Some(_), Some(source)) if offset(source) > own => Decision::promote(
                source,
                epoch,
                Change::Refill {
                    master: inst.name.clone(),
                    missing_bytes: offset(source) - own,
                },
            ),
            (Some(holder), _) => waiting(holder),
        };
    }
    if let Some(wait) = input.policy.cooldown_remaining {
        return Decision::unavailable(&inst.name, down.clone(), Some(cooldown_message(wait)));
    }
    let failover = |to: &ObservedInstance| {
        Decision::promote(
            to,
            epoch,
            Change::Failover {
                from: inst.name.clone(),
                reason: "the master restarted".into(),
            },
        )
    };
    match (candidate.filter(|c| offset(c) >= own), richest) {
        (Some(c), _) => failover(c),
        (None, Some(holder)) => waiting(holder),
        (None, None) => failover(inst),
    }
}

/// With failover disabled, a refilled master takes its role back (`FAILOVER TO`, nothing lost)
/// once it is a synced replica of the master that stood in for it.
pub(super) fn hand_back<'a>(
    input: &'a PlanInput,
    master: &ObservedInstance,
    leaving: &[String],
) -> Option<(&'a ObservedInstance, String)> {
    let home = input.recorded.hand_back_to.as_deref()?;
    let master_address = master.address()?;
    let target = input
        .instances
        .iter()
        .find(|i| i.name == home && i.name != master.name)?;
    let synced = target
        .redis
        .as_ref()
        .is_some_and(|r| r.is_synced_replica() && r.following() == Some(&master_address));
    (synced && !target.deleting && !leaving.contains(&target.name)).then(|| {
        (
            target,
            format!(
                "{home} is refilled from {} and takes the master role back (failover is disabled)",
                master.name
            ),
        )
    })
}

/// Who the status names to hand the role back to after `intent`: set by a refill, kept until
/// that instance is master again (a refill of the stand-in keeps it), dropped when the user
/// forces a master.
pub(super) fn hand_back_after(
    input: &PlanInput,
    change: &Option<Change>,
    intent: &Intent,
) -> Option<String> {
    let recorded = input.recorded.hand_back_to.clone();
    match change {
        // A stand-in that restarts with less is refilled in turn: the role still goes home to
        // the first master, not to the stand-in.
        Some(Change::Refill { master, .. }) => recorded.or_else(|| Some(master.clone())),
        Some(Change::Forced { .. }) => None,
        _ => recorded,
    }
    .filter(|h| *h != intent.master)
}

/// Intent was recorded for `target`, which is not master yet: the operator stopped in between.
/// If the old master still acts, finish with `FAILOVER TO` (nothing lost) when the target is in
/// sync with it, else stay with it; only when no master acts is the target promoted outright.
pub(super) fn resume(input: &PlanInput, target: &ObservedInstance) -> Decision {
    let epoch = input.recorded.epoch;
    let acting = input.instances.iter().find(|i| {
        i.name != target.name
            && i.address().is_some()
            && i.redis.as_ref().is_some_and(|r| r.is_master())
    });
    let Some(old) = acting else {
        // An instance that does not answer while its pod is ready may be the old master, still
        // taking writes: promoting now could make two masters. Wait until it answers, or
        // Kubernetes says it is down.
        let silent = input
            .instances
            .iter()
            .find(|i| i.name != target.name && i.redis.is_none() && i.pod_ready && !i.deleting);
        if let Some(silent) = silent {
            return Decision::unavailable(
                &target.name,
                MasterDown::Suspected,
                Some(format!(
                    "finishing the change to {} waits for {}, which does not answer but whose \
                     pod is ready: it may still act as master",
                    target.name, silent.name
                )),
            );
        }
        let mut d = Decision::acting(target);
        d.change = Some(Change::Resume);
        d.promote = Some(target.name.clone());
        return d;
    };
    let (Some(old_address), Some(target_address)) = (old.address(), target.address()) else {
        return Decision::acting(old);
    };
    let in_sync = target
        .redis
        .as_ref()
        .is_some_and(|r| r.is_synced_replica() && r.following() == Some(&old_address));
    if in_sync {
        return Decision {
            master: Some(MasterState::Acting {
                name: target.name.clone(),
                address: target_address.clone(),
            }),
            intent: Some(Intent {
                master: target.name.clone(),
                address: target_address,
                epoch,
                promotes: true,
                hand_back_to: None,
            }),
            change: Some(Change::Switchover {
                from: old.name.clone(),
                reason: format!(
                    "resuming the interrupted change to {} at epoch {epoch}",
                    target.name
                ),
            }),
            switchover_from: Some(old.name.clone()),
            promote: Some(target.name.clone()),
            ..Decision::default()
        };
    }
    let mut d = Decision::acting(old);
    d.intent = Some(Intent {
        master: old.name.clone(),
        address: old_address,
        epoch,
        promotes: false,
        hand_back_to: None,
    });
    d.change = Some(Change::RolledBack {
        target: target.name.clone(),
    });
    d
}

/// The user's `redis.vigil.dev/force-master` request: `Some(Ok)` carries it out now,
/// `Some(Err)` says what becomes of it, `None` when there is none.
pub(super) fn forced(
    input: &PlanInput,
    leaving: &[String],
) -> Option<Result<Decision, RequestOutcome>> {
    let wanted = input.force_master.as_deref()?;
    let Some(target) = input.instances.iter().find(|i| i.name == wanted) else {
        return Some(Err(RequestOutcome::Rejected(format!(
            "{wanted} is not an instance of this replication"
        ))));
    };
    if leaving.contains(&target.name) || target.ordinal >= input.desired_instances {
        return Some(Err(RequestOutcome::Rejected(format!(
            "{wanted} is removed by the scale-down"
        ))));
    }
    if input.fencing.fences(wanted) {
        return Some(Err(RequestOutcome::Rejected(format!(
            "{wanted} is fenced; unfence it before forcing it to be master"
        ))));
    }
    let recorded = input.recorded.current_master.as_deref() == Some(wanted);
    let info = match &target.redis {
        Some(info) if target.address().is_some() && !target.deleting => info,
        _ => {
            return Some(Err(RequestOutcome::Waiting(format!(
                "waiting for {wanted} to answer"
            ))));
        }
    };
    if recorded && info.is_master() {
        return Some(Err(RequestOutcome::Done));
    }
    let discarded_bytes =
        most_elsewhere(input, wanted, leaving).map_or(0, |r| (offset(r) - offset(target)).max(0));
    let mut d = Decision::promote(
        target,
        input.recorded.epoch,
        Change::Forced { discarded_bytes },
    );
    d.force_request = Some(RequestOutcome::Done);
    Some(Ok(d))
}
