//! Carrying out a plan: its steps in the planner's order (`Plan::steps`), one small function
//! each, with the Events they raise.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

mod handover;
mod intent;
mod roles;
#[cfg(test)]
mod tests;

use super::apply::{apply, apply_pod_metadata, create_if_absent};
use super::plan::{Change, Intent, MasterState, ObservedInstance, Plan, RequestOutcome, Step};
use super::{Context, Error};
use crate::api::RedisReplication;
use crate::crash_point::crash_point;
use crate::labels::{FORCE_MASTER_ANNOTATION, RoleLabel, SWITCHOVER_ANNOTATION};
use crate::redis::{Address, Credentials, InstanceClient};
use crate::resources::{self, instance_pod};
use handover::switch_over;
use intent::record_intent;
pub use intent::write_final_status;
use roles::{
    fence, follow_source, own_masterauth, promote, rewire_one, roll_back_switchover, set_role_label,
};

/// Everything a plan needs to act on.
pub struct Target<'a> {
    pub rr: &'a RedisReplication,
    /// Its namespace, resolved once per reconcile.
    pub namespace: &'a str,
    pub instances: &'a [ObservedInstance],
    pub credentials: &'a Credentials,
    /// The external master's password when the set follows one with a password of its own
    /// (`spec.replicaOf.passwordSecret`).
    pub source_password: Option<&'a str>,
}

impl Target<'_> {
    fn instance(&self, name: &str) -> Result<&ObservedInstance, Error> {
        self.instances
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| Error::InstanceGone(name.to_string()))
    }

    fn address(&self, name: &str) -> Result<Address, Error> {
        self.instance(name)?
            .address()
            .ok_or_else(|| Error::InstanceGone(name.to_string()))
    }

    async fn client(&self, ctx: &Context, name: &str) -> Result<InstanceClient, Error> {
        ctx.connect(name, &self.address(name)?, self.credentials)
            .await
    }
}

/// Runs the plan's steps in order (the order is the planner's: `Plan::steps`). Returns the
/// replication as last written (its resourceVersion guards the final status write).
pub async fn execute(
    ctx: &Context,
    target: &Target<'_>,
    plan: &Plan,
) -> Result<RedisReplication, Error> {
    let mut run = Run {
        ctx,
        target,
        plan,
        current: target.rr.clone(),
        moves: Vec::new(),
    };
    for step in plan.steps() {
        run.step(step).await?;
    }
    run.finish().await;
    Ok(run.current)
}

/// One execution of a plan: what it has written so far.
struct Run<'a> {
    ctx: &'a Context,
    target: &'a Target<'a>,
    plan: &'a Plan,
    /// The replication as last written.
    current: RedisReplication,
    /// "<replica> follows <upstream>" for the rewires done, for one Event.
    moves: Vec<String>,
}

impl Run<'_> {
    async fn step(&mut self, step: Step) -> Result<(), Error> {
        let (ctx, target, plan, rr) = (self.ctx, self.target, self.plan, self.target.rr);
        match step {
            Step::RemoveInstance(name) => {
                delete_pod(ctx, target, &name, "removing instance (scale down)").await?;
                let note = format!("removed {name}");
                ctx.event(rr, EventType::Normal, "InstanceRemoved", "ScaleDown", note)
                    .await;
            }
            Step::Stop(name) => {
                delete_pod(ctx, target, &name, "stopping instance (hibernation)").await?;
                let note = format!("stopped {name} for hibernation; its claim is kept");
                ctx.event(rr, EventType::Normal, "InstanceStopped", "Hibernate", note)
                    .await;
            }
            Step::Fence(name) => fence(ctx, target, &name).await?,
            Step::CreateInstance(ordinal) => create_instance(ctx, target, ordinal).await?,
            Step::Unlabel(name) => {
                set_role_label(ctx, target, &name, None).await?;
                if is_failover(plan) {
                    let note = format!("{name} no longer receives master traffic");
                    ctx.event(rr, EventType::Warning, "InstanceFenced", "Fence", note)
                        .await;
                }
            }
            Step::RecordIntent(intent) => {
                self.current = record_intent(ctx, rr, target.namespace, &intent).await?;
                crash_point("after-intent");
                announce_intent(ctx, rr, plan, &intent).await;
            }
            Step::Promote(name) => {
                promote(ctx, target, &name).await?;
                if plan.change == Some(Change::Detached) {
                    own_masterauth(ctx, target, &name).await?;
                }
                self.promoted(&name).await?;
            }
            Step::SwitchOver { from, to } => {
                if let Err(e) = switch_over(ctx, target, &from, &to).await {
                    roll_back_switchover(ctx, target, &self.current, &from, plan).await;
                    return Err(e);
                }
                self.promoted(&to).await?;
            }
            Step::Follow(rewire) => {
                follow_source(ctx, target, &rewire).await?;
                let note = format!(
                    "{} (designated master) follows the external master {}",
                    rewire.name, rewire.upstream
                );
                ctx.event(rr, EventType::Normal, "FollowingSource", "Follow", note)
                    .await;
            }
            Step::LabelMaster(name) => {
                set_role_label(ctx, target, &name, Some(RoleLabel::Master)).await?;
                crash_point("after-master-label");
            }
            Step::Rewire(rewire) => {
                // The planner rewires only towards an acting master.
                if let MasterState::Acting { name: master, .. } = &plan.master {
                    self.moves
                        .push(rewire_one(ctx, target, &rewire, master).await?);
                }
            }
            Step::LabelReplica(name) => {
                set_role_label(ctx, target, &name, Some(RoleLabel::Replica)).await?;
            }
            Step::SettleRequests => {
                if let Some(updated) = settle_request(ctx, target, plan).await? {
                    self.current = updated;
                }
            }
            Step::Roll(name) => roll(ctx, target, &name).await?,
        }
        Ok(())
    }

    /// After a verified promotion of `name`.
    async fn promoted(&self, name: &str) -> Result<(), Error> {
        let (ctx, rr, plan) = (self.ctx, self.target.rr, self.plan);
        let address = self.target.address(name)?;
        crash_point("after-promote");
        announce_change(ctx, rr, plan, name).await;
        let note = format!(
            "{name} is now the master at {address} ({})",
            describe(&plan.change)
        );
        ctx.event(rr, EventType::Normal, "ReplicaPromoted", "Promote", note)
            .await;
        Ok(())
    }

    /// The Events that sum the run up: who follows whom now, and a completed failover.
    async fn finish(&self) {
        let (ctx, rr, plan) = (self.ctx, self.target.rr, self.plan);
        if !self.moves.is_empty() {
            let note = self.moves.join(", ");
            ctx.event(
                rr,
                EventType::Normal,
                "ReplicasReconfigured",
                "Rewire",
                note,
            )
            .await;
        }
        if is_failover(plan)
            && let Some(intent) = &plan.intent
        {
            let note = format!(
                "epoch {}: {} is the master ({})",
                intent.epoch,
                intent.master,
                describe(&plan.change)
            );
            ctx.event(rr, EventType::Normal, "FailoverCompleted", "Failover", note)
                .await;
        }
    }
}

/// Scale-down and hibernation: the pod goes (its claim stays).
async fn delete_pod(
    ctx: &Context,
    target: &Target<'_>,
    name: &str,
    why: &str,
) -> Result<(), Error> {
    let ns = target.namespace;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    info!(pod = %name, "{why}");
    pods.delete(name, &DeleteParams::default())
        .await
        .map_err(|source| Error::kube(format!("deleting pod {ns}/{name}"), source))?;
    Ok(())
}

/// The claim (with storage, made once) and the pod of `ordinal`, and its user metadata.
async fn create_instance(ctx: &Context, target: &Target<'_>, ordinal: u32) -> Result<(), Error> {
    let (rr, ns) = (target.rr, target.namespace);
    if let Some(claim) = resources::instance_claim(rr, ordinal) {
        create_if_absent(ctx, ns, &claim).await?;
    }
    let pod = instance_pod(rr, ordinal);
    info!(pod = %pod.name_any(), "creating instance");
    apply(ctx, ns, &pod).await?;
    apply_pod_metadata(ctx, rr, ns, ordinal).await
}

/// The Events of a recorded intent: a rolled-back change, or a failover starting.
async fn announce_intent(ctx: &Context, rr: &RedisReplication, plan: &Plan, intent: &Intent) {
    if let Some(Change::RolledBack { target }) = &plan.change {
        let note = format!(
            "the interrupted change to {target} is undone: {} still acts as master and \
             {target} is not in sync with it, so it stays the master",
            intent.master
        );
        ctx.event(rr, EventType::Warning, "ChangeRolledBack", "Resume", note)
            .await;
    }
    if let Some(Change::Failover { from, .. } | Change::Switchover { from, .. }) = &plan.change {
        let note = format!(
            "epoch {}: replacing {from} with {} ({})",
            intent.epoch,
            intent.master,
            describe(&plan.change)
        );
        ctx.event(rr, EventType::Warning, "FailoverStarted", "Failover", note)
            .await;
    }
}

/// Deletes an outdated instance for the rolling update; the next rounds recreate it from the
/// current spec and wait until it is in sync before the next one goes.
async fn roll(ctx: &Context, target: &Target<'_>, name: &str) -> Result<(), Error> {
    let (rr, ns) = (target.rr, target.namespace);
    let outdated = target.instances.iter().filter(|i| i.outdated()).count();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    pods.delete(name, &DeleteParams::default())
        .await
        .map_err(|source| Error::kube(format!("deleting pod {ns}/{name}"), source))?;
    info!(pod = %name, outdated, "replacing instance (rolling update)");
    ctx.pod_event(
        rr,
        EventType::Normal,
        name,
        "RollingUpdate",
        "Replace",
        format!(
            "replacing {name} to apply the current spec ({} of {} instances updated)",
            target.instances.len() - outdated,
            target.instances.len()
        ),
    )
    .await;
    Ok(())
}

/// A request (switchover, force-master) that is done or can never be done is removed from the
/// replication, so its annotation always means "pending"; a rejected one says why in an Event.
/// Returns the replication as patched, whose resourceVersion the final status write needs.
async fn settle_request(
    ctx: &Context,
    target: &Target<'_>,
    plan: &Plan,
) -> Result<Option<RedisReplication>, Error> {
    let (rr, ns) = (target.rr, target.namespace);
    let requests = [
        (SWITCHOVER_ANNOTATION, "SwitchoverRejected", &plan.request),
        (
            FORCE_MASTER_ANNOTATION,
            "ForceMasterRejected",
            &plan.force_request,
        ),
    ];
    let mut settled = serde_json::Map::new();
    for (annotation, rejected, outcome) in requests {
        match outcome {
            Some(RequestOutcome::Done) => {}
            Some(RequestOutcome::Rejected(why)) => {
                ctx.event(
                    rr,
                    EventType::Warning,
                    rejected,
                    "Request",
                    format!("{annotation} ignored: {why}"),
                )
                .await;
            }
            Some(RequestOutcome::Waiting(_)) | None => continue,
        }
        settled.insert(annotation.to_string(), serde_json::Value::Null);
    }
    if settled.is_empty() {
        return Ok(None);
    }
    let name = rr.name_any();
    let api: Api<RedisReplication> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"metadata": {"annotations": settled}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(Some)
        .map_err(|source| {
            Error::kube(
                format!("removing the settled request annotations of {ns}/{name}"),
                source,
            )
        })
}

/// The Warning a promotion that is not a plain failover deserves: a stand-in master while the
/// restarted one is refilled, or data discarded on the user's request.
async fn announce_change(ctx: &Context, rr: &RedisReplication, plan: &Plan, promoted: &str) {
    let note = match &plan.change {
        Some(Change::Refill {
            master,
            missing_bytes,
        }) => (
            "MasterRefilling",
            format!(
                "failover is disabled and {master} restarted with {missing_bytes} bytes less \
                 than {promoted}: {promoted} serves as master while {master} is refilled from \
                 it, then {master} takes the master role back; nothing is discarded"
            ),
        ),
        Some(Change::Forced { discarded_bytes }) => (
            "ReplicaDataDiscarded",
            format!(
                "{FORCE_MASTER_ANNOTATION}: {promoted} is the master by request; the other \
                 instances resync from it and discard up to {discarded_bytes} bytes they held \
                 beyond it"
            ),
        ),
        _ => return,
    };
    ctx.event(rr, EventType::Warning, note.0, "Promote", note.1)
        .await;
}

fn is_failover(plan: &Plan) -> bool {
    matches!(
        plan.change,
        Some(Change::Failover { .. } | Change::Switchover { .. })
    )
}

fn describe(change: &Option<Change>) -> String {
    match change {
        Some(Change::Failover { reason, .. }) => format!("failover: {reason}"),
        Some(Change::Switchover { reason, .. }) => format!("switchover: {reason}"),
        Some(Change::Bootstrap) => "bootstrap".into(),
        Some(Change::Restore) => {
            "the master restarted with all its data; failover is disabled".into()
        }
        Some(Change::Reinstated) => "its fence or hibernation is lifted and it lost nothing".into(),
        Some(Change::Refill { master, .. }) => {
            format!("standing in while {master} is refilled; failover is disabled")
        }
        Some(Change::Forced { .. }) => format!("forced by {FORCE_MASTER_ANNOTATION}"),
        Some(Change::RolledBack { target }) => format!("the change to {target} is undone"),
        Some(Change::Resume) => "resuming an interrupted promotion".into(),
        Some(Change::Detached) => {
            "spec.replicaOf was removed: promoted with everything it had received".into()
        }
        None => "no change".into(),
    }
}
