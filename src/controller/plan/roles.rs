//! Who follows whom and which role labels pods carry (rules 1 and 6), and the rolling update
//! (rule 8).

use super::{MasterState, ObservedInstance, Plan, PlanInput, Rewire};
use crate::api::Topology;
use crate::labels::RoleLabel;
use crate::redis::{Address, ReplicationInfo};

/// Every desired instance exists, is ready, is not going, and follows its upstream in sync:
/// the only state in which the rolling update takes an instance away.
pub(super) fn settled(input: &PlanInput, master: &ObservedInstance) -> bool {
    let Some(master_address) = master.address() else {
        return false;
    };
    let complete = input.instances.len() == input.desired_instances as usize
        && input
            .instances
            .iter()
            .all(|i| i.ordinal < input.desired_instances && !i.deleting && i.pod_ready);
    let upstreams = upstreams(input, &master.name, &master_address, |_| true);
    complete
        && upstreams.len() + 1 == input.instances.len()
        && upstreams.iter().all(|(inst, upstream)| {
            inst.redis
                .as_ref()
                .is_some_and(|r| r.is_synced_replica() && r.following() == Some(upstream))
        })
}

/// Who follows whom and which labels pods carry. Removals come first (rule 1); replica labels
/// only once an instance follows its upstream (rule 6).
pub(super) fn plan_roles(input: &PlanInput, plan: &mut Plan) {
    let master = match &plan.master {
        MasterState::Acting { name, address } => Some((name.clone(), address.clone())),
        _ => None,
    };
    let recorded = input.recorded.current_master.as_deref();
    // A switching-over master is made a replica by `FAILOVER` itself; one beyond `instances`
    // leaves next round.
    let stays = |i: &ObservedInstance| {
        !i.deleting
            && !input.fencing.fences(&i.name)
            && !plan.delete.contains(&i.name)
            && i.ordinal < input.desired_instances
            && plan.switchover_from.as_deref() != Some(i.name.as_str())
    };
    let upstreams = master
        .as_ref()
        .map(|(name, address)| upstreams(input, name, address, stays))
        .unwrap_or_default();
    for inst in &input.instances {
        if input.fencing.fences(&inst.name) {
            plan_fence(inst, plan);
            continue;
        }
        let is_master = master.as_ref().is_some_and(|(m, _)| *m == inst.name);
        if is_master {
            if inst.role_label != Some(RoleLabel::Master) {
                plan.label_master = Some(inst.name.clone());
            }
            continue;
        }
        let labelled_master = inst.role_label == Some(RoleLabel::Master);
        if master.is_none() {
            // No acting master: only the recorded master may keep the master label.
            if labelled_master && Some(inst.name.as_str()) != recorded {
                plan.unlabel.push(inst.name.clone());
            }
            continue;
        }
        let upstream = upstreams.iter().find(|(i, _)| i.name == inst.name);
        match (inst.redis.as_ref(), upstream) {
            (Some(info), Some((_, upstream))) => {
                if labelled_master {
                    plan.unlabel.push(inst.name.clone());
                }
                if info.following() != Some(upstream) {
                    plan.rewire.push(Rewire {
                        name: inst.name.clone(),
                        upstream: upstream.clone(),
                    });
                }
                if inst.role_label != Some(RoleLabel::Replica) {
                    plan.label_replicas.push(inst.name.clone());
                }
            }
            _ if labelled_master => plan.unlabel.push(inst.name.clone()),
            _ => {}
        }
    }
}

/// A fenced instance leaves the Services first (rule 1's order), then follows nobody: read-only,
/// its data kept, its clients closed so that none keeps writing to or reading from it unaware.
fn plan_fence(inst: &ObservedInstance, plan: &mut Plan) {
    if inst.role_label.is_some() {
        plan.unlabel.push(inst.name.clone());
    }
    if inst.redis.as_ref().is_some_and(|r| !r.is_fenced()) && !inst.deleting {
        plan.fence.push(inst.name.clone());
    }
}

/// The upstream of every reachable non-master instance that `stays`: the master (star), or the
/// previous such instance in ordinal order (chain). A link that is not a synced replica is
/// skipped, so one broken or syncing instance never cuts the rest of the chain
/// off the data. The target of a requested switchover follows the master whatever the topology,
/// as `FAILOVER TO` needs.
pub(super) fn upstreams<'a>(
    input: &'a PlanInput,
    master: &str,
    master_address: &Address,
    stays: impl Fn(&ObservedInstance) -> bool,
) -> Vec<(&'a ObservedInstance, Address)> {
    let mut members: Vec<&ObservedInstance> = input
        .instances
        .iter()
        .filter(|i| i.name != master && i.redis.is_some() && stays(i))
        .collect();
    members.sort_by_key(|i| i.ordinal);
    let mut link = master_address.clone();
    let mut out = Vec::with_capacity(members.len());
    for inst in members {
        let direct = input.topology == Topology::Star
            || input.switchover_to.as_deref() == Some(inst.name.as_str());
        let upstream = if direct {
            master_address.clone()
        } else {
            link.clone()
        };
        // A synced replica serves its own replicas even while it is being moved: they follow
        // along with a partial resync.
        let in_sync = inst
            .redis
            .as_ref()
            .is_some_and(ReplicationInfo::is_synced_replica);
        if let (true, Some(address)) = (in_sync, inst.address()) {
            link = address;
        }
        out.push((inst, upstream));
    }
    out
}

/// Rolling update (rule 8): one outdated replica at a time, the highest ordinal first, only
/// when nothing else is happening and every instance is ready and in sync. The master goes last
/// through a switchover (`rolling_handover`); a lone instance is simply replaced.
pub(super) fn plan_roll(input: &PlanInput, plan: &Plan) -> Option<String> {
    let MasterState::Acting { name: master, .. } = &plan.master else {
        return None;
    };
    let quiet = plan.intent.is_none()
        && plan.change.is_none()
        && plan.create.is_empty()
        && plan.delete.is_empty()
        && plan.unlabel.is_empty()
        && plan.rewire.is_empty()
        && plan.label_master.is_none()
        && plan.label_replicas.is_empty();
    let master_inst = input.instances.iter().find(|i| &i.name == master)?;
    if !quiet || !settled(input, master_inst) {
        return None;
    }
    let replica = input
        .instances
        .iter()
        .filter(|i| &i.name != master && i.outdated())
        .max_by_key(|i| i.ordinal);
    match replica {
        Some(r) => Some(r.name.clone()),
        None if input.instances.len() == 1 && master_inst.outdated() => Some(master.clone()),
        None => None,
    }
}
