//! Who is master: bootstrap, an acting master (and its planned handovers), and a master that
//! does not answer (rule 3); the candidate of rule 4.

use std::cmp::Reverse;
use std::time::Duration;

use super::roles::settled;
use super::{
    Change, Decision, Intent, MasterDown, MasterState, ObservedInstance, PlanInput, RequestOutcome,
    follow, recovery,
};
use crate::isolation::{promotion_hold, quorum};
use crate::redis::Role;

pub(super) fn decide(input: &PlanInput, leaving: &[String]) -> Decision {
    let force_request = match recovery::forced(input, leaving) {
        Some(Ok(forced)) => return forced,
        Some(Err(outcome)) => Some(outcome),
        None => None,
    };
    let mut d = decide_unforced(input, leaving);
    d.force_request = force_request;
    d
}

pub(super) fn decide_unforced(input: &PlanInput, leaving: &[String]) -> Decision {
    let recorded = &input.recorded;
    let Some(name) = recorded.current_master.as_deref() else {
        return first_master(input, leaving).map_or_else(Decision::default, |first| {
            Decision::promote(first, recorded.epoch, Change::Bootstrap)
        });
    };
    if input.fencing.fences(name) {
        return Decision {
            master: Some(MasterState::Fenced {
                name: name.to_string(),
            }),
            ..Decision::default()
        };
    }
    let inst = input.instances.iter().find(|i| i.name == name);
    if let Some(d) = follow::detach(input, inst, leaving) {
        return d;
    }
    match inst.and_then(|i| i.redis.as_ref().map(|r| (i, r))) {
        Some((inst, info)) if info.is_master() => acting_master(input, inst, leaving),
        // Intent was recorded but the promotion did not finish.
        Some((inst, _)) if recorded.target_master.as_deref() == Some(name) => {
            recovery::resume(input, inst)
        }
        // Reachable but not master: it restarted (and booted fenced) or was demoted.
        Some((inst, _)) => recovery::restarted_master(input, inst, leaving),
        // Its pod is new and still starting: that is no failure, whatever the pod says.
        None if recorded.waking(input) => Decision::unavailable(
            name,
            MasterDown::Suspected,
            Some(format!(
                "the set wakes from hibernation: waiting for {name}, the recorded master, to                  start (annotate the replication with redis.vigil.dev/force-master=<pod> to                  choose another)"
            )),
        ),
        None => unreachable_master(input, name, inst, leaving),
    }
}

/// The set's first master, once every desired instance answers (or the bootstrap grace is
/// over), so the choice compares all the data there is; `None` while waiting.
pub(super) fn first_master<'a>(
    input: &'a PlanInput,
    leaving: &[String],
) -> Option<&'a ObservedInstance> {
    let all_answer = (0..input.desired_instances).all(|o| {
        input
            .instances
            .iter()
            .any(|i| i.ordinal == o && !i.deleting && i.redis.is_some())
    });
    if !all_answer && !input.policy.bootstrap_grace_over {
        return None;
    }
    best_candidate(input, leaving, None, |_| true)
}

/// The master answers as master. It hands over first (rule 7) when its pod is being deleted, a
/// scale-down removes it, the user asked, or only it is left for the rolling update.
pub(super) fn acting_master(
    input: &PlanInput,
    inst: &ObservedInstance,
    leaving: &[String],
) -> Decision {
    let recorded = &input.recorded;
    let forced = if inst.deleting && input.policy.enabled {
        Some(format!("pod {} is being deleted", inst.name))
    } else if inst.ordinal >= input.desired_instances {
        Some(format!(
            "scaling down to {} instances removes {}",
            input.desired_instances, inst.name
        ))
    } else {
        None
    };
    let mut request = None;
    let handover = match forced {
        Some(reason) => switchover_candidate(input, leaving, inst).map(|t| (t, reason)),
        None => match input.switchover_to.as_deref() {
            Some(wanted) => match judge_request(input, inst, leaving, wanted) {
                Ok(target) => {
                    request = Some(RequestOutcome::Done);
                    Some((target, format!("the user asked for {wanted}")))
                }
                Err(outcome) => {
                    request = Some(outcome);
                    None
                }
            },
            None => recovery::hand_back(input, inst, leaving)
                .or_else(|| rolling_handover(input, inst, leaving)),
        },
    };
    if let Some((target, reason)) = handover {
        let mut d = Decision::promote(
            target,
            recorded.epoch,
            Change::Switchover {
                from: inst.name.clone(),
                reason,
            },
        );
        d.switchover_from = Some(inst.name.clone());
        d.request = request;
        return d;
    }
    let mut d = moved_address(input, inst);
    d.request = request;
    d
}

/// `inst` stays the master; its pod may have come back with a new IP: record where it is now.
pub(super) fn moved_address(input: &PlanInput, inst: &ObservedInstance) -> Decision {
    let recorded = &input.recorded;
    let mut d = Decision::acting(inst);
    if let Some(MasterState::Acting { address, .. }) = &d.master
        && recorded.master_address.as_deref() != Some(&address.to_string())
    {
        d.intent = Some(Intent {
            master: inst.name.clone(),
            address: address.clone(),
            epoch: recorded.epoch,
            promotes: false,
            hand_back_to: None,
        });
    }
    d
}

/// `FAILOVER TO` needs a replica linked to the master itself: the best synced one, preferring
/// instances already on the current spec.
pub(super) fn switchover_candidate<'a>(
    input: &'a PlanInput,
    leaving: &[String],
    master: &ObservedInstance,
) -> Option<&'a ObservedInstance> {
    let master_address = master.address()?;
    let eligible = |i: &ObservedInstance| {
        i.redis
            .as_ref()
            .is_some_and(|r| r.is_synced_replica() && r.following() == Some(&master_address))
    };
    best_candidate(input, leaving, Some(&master.name), |i| {
        eligible(i) && !i.outdated()
    })
    .or_else(|| best_candidate(input, leaving, Some(&master.name), eligible))
}

/// Whether the user's switchover to `wanted` can happen now: the target, or what becomes of
/// the request.
pub(super) fn judge_request<'a>(
    input: &'a PlanInput,
    master: &ObservedInstance,
    leaving: &[String],
    wanted: &str,
) -> Result<&'a ObservedInstance, RequestOutcome> {
    if wanted == master.name {
        return Err(RequestOutcome::Done);
    }
    let Some(target) = input.instances.iter().find(|i| i.name == wanted) else {
        return Err(RequestOutcome::Rejected(format!(
            "{wanted} is not an instance of this replication"
        )));
    };
    if leaving.contains(&target.name) || target.ordinal >= input.desired_instances {
        return Err(RequestOutcome::Rejected(format!(
            "{wanted} is removed by the scale-down"
        )));
    }
    if target.priority == 0 {
        return Err(RequestOutcome::Rejected(format!(
            "{wanted} has replica-priority 0 and is never promoted"
        )));
    }
    if input.fencing.fences(wanted) {
        return Err(RequestOutcome::Rejected(format!(
            "{wanted} is fenced and is never promoted; unfence it first"
        )));
    }
    let linked = master.address().is_some_and(|m| {
        target
            .redis
            .as_ref()
            .is_some_and(|r| r.is_synced_replica() && r.following() == Some(&m))
    });
    if target.deleting || !linked {
        return Err(RequestOutcome::Waiting(format!(
            "waiting for {wanted} to be a synced replica of the master {}",
            master.name
        )));
    }
    Ok(target)
}

/// Rolling update (rule 8): the master goes last, once every other instance runs the current
/// spec and the set is settled; it hands over to a synced replica first.
pub(super) fn rolling_handover<'a>(
    input: &'a PlanInput,
    master: &ObservedInstance,
    leaving: &[String],
) -> Option<(&'a ObservedInstance, String)> {
    let others_current = input
        .instances
        .iter()
        .all(|i| i.name == master.name || !i.outdated());
    if !master.outdated() || !others_current || !settled(input, master) {
        return None;
    }
    let target = switchover_candidate(input, leaving, master)?;
    Some((
        target,
        format!("rolling update: {} runs an older spec", master.name),
    ))
}

/// Rules 3 and 9: silent for `downAfter`, corroborated by the replicas, and only once the
/// master must have fenced itself (`crate::isolation`).
pub(super) fn unreachable_master(
    input: &PlanInput,
    name: &str,
    inst: Option<&ObservedInstance>,
    leaving: &[String],
) -> Decision {
    let policy = &input.policy;
    let unreachable_for = policy.master_unreachable_for.unwrap_or_default();
    // Objective evidence needs no waiting: a master that does not answer and whose process is
    // not running (or whose pod is gone or going) takes no writes (rule 3). Silence alone
    // waits for downAfter, corroboration and the fence.
    let now = dead_now(inst);
    if now.is_none() && unreachable_for < policy.down_after {
        return Decision::unavailable(name, MasterDown::Suspected, None);
    }
    let evidence = match now {
        Some(evidence) => evidence,
        None => match silence_evidence(input, inst) {
            Ok(evidence) => evidence,
            Err(why) => return Decision::unavailable(name, MasterDown::Subjective, Some(why)),
        },
    };
    let down = MasterDown::Objective { evidence };
    if !policy.enabled {
        return Decision::unavailable(name, down, Some("failover is disabled".into()));
    }
    if let Some(wait) = policy.cooldown_remaining {
        return Decision::unavailable(name, down, Some(cooldown_message(wait)));
    }
    match best_candidate(input, leaving, Some(name), |_| true) {
        Some(target) => {
            let mut d = Decision::promote(
                target,
                input.recorded.epoch,
                Change::Failover {
                    from: name.to_string(),
                    reason: match &down {
                        MasterDown::Objective { evidence } => evidence.clone(),
                        _ => "master down".into(),
                    },
                },
            );
            d.down = Some(down);
            d
        }
        None => Decision::unavailable(
            name,
            down,
            Some("no reachable replica can be promoted".into()),
        ),
    }
}

pub(super) fn cooldown_message(wait: Duration) -> String {
    format!(
        "a failover happened recently; the next is allowed in {}s",
        wait.as_secs().max(1)
    )
}

/// Evidence, at once, that an unanswering master's Redis is not running.
pub(super) fn dead_now(master: Option<&ObservedInstance>) -> Option<String> {
    let Some(master) = master else {
        return Some("its pod is gone".into());
    };
    if master.deleting {
        return Some(format!("pod {} is being deleted", master.name));
    }
    master
        .stopped
        .as_ref()
        .map(|why| format!("pod {}: {why}", master.name))
}

/// Why a silent master may be replaced now (rule 9), or why not yet. More replicas than its
/// quorum leaves must have been unable to ack it for the promotion hold (reachable, and still
/// or following another), so it cannot keep a quorum; and the status must have recorded it
/// silent as long, so it cannot be confirmed by the apiserver either.
pub(super) fn silence_evidence(
    input: &PlanInput,
    master: Option<&ObservedInstance>,
) -> Result<String, String> {
    let Some(master) = master else {
        return Ok("its pod is gone".into());
    };
    let policy = &input.policy;
    let hold = promotion_hold(policy.down_after);
    let replicas = input.desired_instances.saturating_sub(1);
    let master_address = master.address();
    let unable = input
        .instances
        .iter()
        .filter(|i| i.name != master.name && !i.deleting)
        .filter(|i| {
            let (Some(info), Some(still)) = (&i.redis, i.still) else {
                return false;
            };
            let follows = master_address
                .as_ref()
                .is_some_and(|a| info.following() == Some(a));
            let still = if follows {
                still.since_reply_of(info.offset, master.silent_at_offset, master.silent_for)
            } else {
                still
            };
            still.cannot_ack(follows, policy.down_after, hold)
        })
        .count();
    let unable = u32::try_from(unable).unwrap_or(u32::MAX);
    let quorum = quorum(replicas, input.topology);
    let may_ack = replicas.saturating_sub(unable);
    if quorum == 0 || may_ack >= quorum {
        return Err(format!(
            "only the operator cannot reach the master: {may_ack} of {replicas} replicas may \
             still acknowledge it ({quorum} keep it master; a replica cannot once it has heard \
             nothing from it for {}ms)",
            hold.max(policy.down_after).as_millis()
        ));
    }
    if policy
        .silence_recorded_for
        .is_none_or(|recorded| recorded < hold)
    {
        return Err(format!(
            "waiting until the master, recorded silent, must have fenced itself ({}ms)",
            hold.as_millis()
        ));
    }
    Ok(format!(
        "{unable} of {replicas} replicas have not heard from it for {}ms or more",
        hold.max(policy.down_after).as_millis()
    ))
}

pub(super) fn offset(inst: &ObservedInstance) -> i64 {
    inst.redis.as_ref().map_or(-1, |r| r.offset)
}

/// Rule 4: the reachable replica with the greatest replication offset, then the preferred
/// priority, then the lowest ordinal, among those `also` accepts. Never one in a full sync,
/// leaving the set, being deleted, fenced by request, or with priority 0 (unless nothing else
/// exists at bootstrap).
pub(super) fn best_candidate<'a>(
    input: &'a PlanInput,
    leaving: &[String],
    excluded: Option<&str>,
    also: impl Fn(&ObservedInstance) -> bool,
) -> Option<&'a ObservedInstance> {
    input
        .instances
        .iter()
        .filter(|i| Some(i.name.as_str()) != excluded && !i.deleting && !leaving.contains(&i.name))
        .filter(|i| i.ordinal < input.desired_instances && !input.fencing.fences(&i.name))
        .filter(|i| also(i))
        .filter(|i| i.ip.is_some() && (i.priority > 0 || excluded.is_none()))
        .filter_map(|i| i.redis.as_ref().map(|r| (i, r)))
        .filter(|(_, r)| {
            !matches!(
                r.role,
                Role::Replica {
                    sync_in_progress: true,
                    ..
                }
            )
        })
        .min_by_key(|(i, r)| (Reverse(r.offset), i.priority, i.ordinal))
        .map(|(i, _)| i)
}
