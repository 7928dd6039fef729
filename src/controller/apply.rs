//! Carrying out a plan, in the order the safety rules need: stray master labels first, intent
//! written before any instance is touched, promotion verified before the master label moves.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::info;

use super::observe::Observation;
use super::plan::{Change, Intent, MasterState, ObservedInstance, Plan, RequestOutcome, Rewire};
use super::{Context, Error};
use crate::api::{RedisReplication, RedisReplicationStatus};
use crate::crash_point::crash_point;
use crate::redis::{Address, Credentials, InstanceClient};
use crate::redis_conf::MinReplicas;
use crate::resources::{
    self, CONFIG_ANNOTATION, FIELD_MANAGER, FORCE_MASTER_ANNOTATION, POD_METADATA_MANAGER,
    ROLE_LABEL, RoleLabel, SWITCHOVER_ANNOTATION, instance_pod,
};

/// A namespaced object the operator writes.
trait Owned:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Owned for K where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// Server-side applies every object the replication owns besides its pods.
pub async fn ensure_objects(ctx: &Context, rr: &RedisReplication) -> Result<(), Error> {
    let ns = rr.namespace().unwrap_or_default();
    apply(ctx, &ns, &resources::instance_service_account(rr)).await?;
    apply(ctx, &ns, &resources::instance_role(rr)).await?;
    apply(ctx, &ns, &resources::instance_role_binding(rr)).await?;
    apply(ctx, &ns, &resources::config_map(rr)).await?;
    apply(ctx, &ns, &resources::headless_service(rr)).await?;
    apply(ctx, &ns, &resources::master_service(rr)).await?;
    apply(ctx, &ns, &resources::replicas_service(rr)).await?;
    let name = rr.name_any();
    ensure_optional(
        ctx,
        rr,
        &ns,
        &resources::disruption_budget_name(&name),
        resources::pod_disruption_budget(rr),
    )
    .await?;
    ensure_optional(
        ctx,
        rr,
        &ns,
        &resources::network_policy_name(&name),
        resources::network_policy(rr, &ctx.operator_namespace),
    )
    .await?;
    ensure_auth_secret(ctx, rr, &ns).await
}

/// An object the spec may turn off (the PodDisruptionBudget, the NetworkPolicy): applied while
/// `desired` is `Some`; once off, ours is deleted (one of the same name that someone else owns
/// is left alone).
async fn ensure_optional<K>(
    ctx: &Context,
    rr: &RedisReplication,
    ns: &str,
    name: &str,
    desired: Option<K>,
) -> Result<(), Error>
where
    K: Owned,
{
    if let Some(obj) = desired {
        return apply(ctx, ns, &obj).await.map(drop);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let kind = K::kind(&());
    let context = |verb: &str| format!("{verb} {kind} {ns}/{name}");
    let existing = api
        .get_opt(name)
        .await
        .map_err(|source| Error::kube(context("reading"), source))?;
    let Some(obj) = existing.filter(|o| {
        o.owner_references()
            .iter()
            .any(|r| r.controller == Some(true) && Some(&r.uid) == rr.uid().as_ref())
    }) else {
        return Ok(());
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.uid(),
            ..Preconditions::default()
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            info!(kind = %kind, name = %name, "disabled, deleted");
            Ok(())
        }
        // Gone or replaced meanwhile: nothing of ours left to delete.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => Err(Error::kube(context("deleting"), source)),
    }
}

/// The user's pod labels and annotations on instance `ordinal` (see `instance_pod_metadata`).
pub async fn apply_pod_metadata(
    ctx: &Context,
    rr: &RedisReplication,
    ordinal: u32,
) -> Result<(), Error> {
    let ns = rr.namespace().unwrap_or_default();
    let metadata = resources::instance_pod_metadata(rr, ordinal);
    apply_as(ctx, &ns, &metadata, POD_METADATA_MANAGER)
        .await
        .map(drop)
}

/// Settings that follow the spec without a restart, with `CONFIG SET` on every reachable
/// instance: the failover settings, and a changed `config` where Redis takes it live (the pod
/// then records it, and is no longer outdated). A `config` that cannot go live (a key removed, a
/// setting Redis only reads at start) leaves the instance to the rolling update. A failure is
/// logged and retried at the next re-apply; it never blocks a failover.
pub async fn sync_live_config(ctx: &Context, rr: &RedisReplication, observed: &mut Observation) {
    let settings = MinReplicas::from_spec(&rr.spec.failover).settings();
    let ns = rr.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for inst in observed.instances.iter_mut().filter(|i| i.redis.is_some()) {
        let Some(address) = inst.address() else {
            continue;
        };
        let changes = match inst
            .config_outdated
            .then(|| live_config_changes(observed.configs.get(&inst.name), &rr.spec.config))
        {
            Some(Err(why)) => {
                info!(instance = %inst.name, why, "config cannot change live; the rolling update replaces the instance");
                None
            }
            Some(Ok(changes)) => Some(changes),
            None => None,
        };
        let result = async {
            let mut client = InstanceClient::connect(
                &inst.name,
                &address,
                &observed.credentials,
                ctx.probe_timeout,
            )
            .await?;
            for (key, value) in &settings {
                client.config_set(key, value).await?;
            }
            for (key, value) in changes.iter().flatten() {
                client.config_set(key, value).await?;
            }
            Ok::<_, crate::redis::Error>(changes.is_some())
        }
        .await;
        match result {
            Ok(true) => {
                let patch = json!({"metadata": {"annotations": {
                    CONFIG_ANNOTATION: resources::config_annotation(rr)
                }}});
                match pods
                    .patch(&inst.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        inst.config_outdated = false;
                        info!(instance = %inst.name, "config applied live");
                    }
                    Err(e) => {
                        tracing::warn!(instance = %inst.name, error = %e, "cannot record the live config")
                    }
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::info!(instance = %inst.name, error = %e, "config not applied live; the rolling update replaces the instance");
            }
        }
    }
}

/// The `CONFIG SET`s that take an instance from the `config` it runs (as its pod records it) to
/// `wanted`, or why that cannot be done live.
fn live_config_changes<'a>(
    running: Option<&BTreeMap<String, String>>,
    wanted: &'a BTreeMap<String, String>,
) -> Result<Vec<(&'a str, &'a str)>, String> {
    let running = running.ok_or("the config it runs is not recorded")?;
    if let Some(removed) = running.keys().find(|k| !wanted.contains_key(*k)) {
        return Err(format!(
            "config key {removed} was removed, which only a restart undoes"
        ));
    }
    Ok(wanted
        .iter()
        .filter(|(k, v)| running.get(*k) != Some(*v))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect())
}

/// The generated password is made once; an existing Secret is never rewritten.
async fn ensure_auth_secret(ctx: &Context, rr: &RedisReplication, ns: &str) -> Result<(), Error> {
    let password: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    if let Some(secret) = resources::auth_secret(rr, &password) {
        create_if_absent(ctx, ns, &secret).await?;
    }
    Ok(())
}

/// Applies `obj` only if no object of its name exists: for what is made once and then left
/// alone (a generated password; a claim, whose data outlives pods and which a later change of
/// `storage` must not fail).
async fn create_if_absent<K>(ctx: &Context, ns: &str, obj: &K) -> Result<(), Error>
where
    K: Owned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.name_any();
    let exists = api
        .get_opt(&name)
        .await
        .map_err(|source| Error::kube(format!("reading {} {ns}/{name}", K::kind(&())), source))?
        .is_some();
    if !exists {
        apply(ctx, ns, obj).await?;
        info!(kind = %K::kind(&()), name = %name, "created");
    }
    Ok(())
}

async fn apply<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Owned,
{
    apply_as(ctx, ns, obj, FIELD_MANAGER).await
}

async fn apply_as<K>(ctx: &Context, ns: &str, obj: &K, manager: &str) -> Result<K, Error>
where
    K: Owned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.name_any();
    api.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| Error::kube(format!("applying {} {ns}/{name}", K::kind(&())), source))
}

/// Everything a plan needs to act on.
pub struct Target<'a> {
    pub rr: &'a RedisReplication,
    pub instances: &'a [ObservedInstance],
    pub credentials: &'a Credentials,
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
        let address = self.address(name)?;
        Ok(InstanceClient::connect(name, &address, self.credentials, ctx.probe_timeout).await?)
    }
}

/// Executes the plan in the order the safety rules need. Returns the replication as last written
/// (its resourceVersion guards the final status write).
pub async fn execute(
    ctx: &Context,
    target: &Target<'_>,
    plan: &Plan,
) -> Result<RedisReplication, Error> {
    let rr = target.rr;
    let ns = rr.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    for name in &plan.delete {
        info!(pod = %name, "removing instance (scale down)");
        pods.delete(name, &DeleteParams::default())
            .await
            .map_err(|source| Error::kube(format!("deleting pod {ns}/{name}"), source))?;
        ctx.event(
            rr,
            EventType::Normal,
            "InstanceRemoved",
            "ScaleDown",
            format!("removed {name}"),
        )
        .await;
    }
    for ordinal in &plan.create {
        if let Some(claim) = resources::instance_claim(rr, *ordinal) {
            create_if_absent(ctx, &ns, &claim).await?;
        }
        let pod = instance_pod(rr, *ordinal);
        info!(pod = %pod.name_any(), "creating instance");
        apply(ctx, &ns, &pod).await?;
        apply_pod_metadata(ctx, rr, *ordinal).await?;
    }

    // Rule 1: a stray master label goes before anyone is promoted.
    for name in &plan.unlabel {
        set_role_label(ctx, target, name, None).await?;
        if is_failover(plan) {
            ctx.event(
                rr,
                EventType::Warning,
                "InstanceFenced",
                "Fence",
                format!("{name} no longer receives master traffic"),
            )
            .await;
        }
    }

    let mut current = rr.clone();
    if let Some(intent) = &plan.intent {
        current = record_intent(ctx, rr, intent).await?;
        crash_point("after-intent");
        if let Some(Change::RolledBack { target }) = &plan.change {
            ctx.event(
                rr,
                EventType::Warning,
                "ChangeRolledBack",
                "Resume",
                format!(
                    "the interrupted change to {target} is undone: {} still acts as master and \
                     {target} is not in sync with it, so it stays the master",
                    intent.master
                ),
            )
            .await;
        }
        if let Some(Change::Failover { from, .. } | Change::Switchover { from, .. }) = &plan.change
        {
            ctx.event(
                rr,
                EventType::Warning,
                "FailoverStarted",
                "Failover",
                format!(
                    "epoch {}: replacing {from} with {} ({})",
                    intent.epoch,
                    intent.master,
                    describe(&plan.change)
                ),
            )
            .await;
        }
    }

    if let Some(name) = &plan.promote {
        let address = target.address(name)?;
        match &plan.switchover_from {
            Some(from) => {
                if let Err(e) = switch_over(ctx, target, from, name).await {
                    roll_back_switchover(ctx, target, &current, from, plan).await;
                    return Err(e);
                }
            }
            None => promote(ctx, target, name).await?,
        }
        crash_point("after-promote");
        announce_change(ctx, rr, plan, name).await;
        ctx.event(
            rr,
            EventType::Normal,
            "ReplicaPromoted",
            "Promote",
            format!(
                "{name} is now the master at {address} ({})",
                describe(&plan.change)
            ),
        )
        .await;
    }
    if let Some(name) = &plan.label_master {
        set_role_label(ctx, target, name, Some(RoleLabel::Master)).await?;
        crash_point("after-master-label");
    }

    if let MasterState::Acting { name, .. } = &plan.master {
        rewire(ctx, target, plan, name).await?;
    }
    for name in &plan.label_replicas {
        set_role_label(ctx, target, name, Some(RoleLabel::Replica)).await?;
    }
    if is_failover(plan)
        && let Some(intent) = &plan.intent
    {
        ctx.event(
            rr,
            EventType::Normal,
            "FailoverCompleted",
            "Failover",
            format!(
                "epoch {}: {} is the master ({})",
                intent.epoch,
                intent.master,
                describe(&plan.change)
            ),
        )
        .await;
    }
    if let Some(updated) = settle_request(ctx, rr, plan).await? {
        current = updated;
    }
    if let Some(name) = &plan.roll {
        roll(ctx, target, name).await?;
    }
    Ok(current)
}

/// Deletes an outdated instance for the rolling update; the next rounds recreate it from the
/// current spec and wait until it is in sync before the next one goes.
async fn roll(ctx: &Context, target: &Target<'_>, name: &str) -> Result<(), Error> {
    let rr = target.rr;
    let ns = rr.namespace().unwrap_or_default();
    let outdated = target.instances.iter().filter(|i| i.outdated()).count();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
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
    rr: &RedisReplication,
    plan: &Plan,
) -> Result<Option<RedisReplication>, Error> {
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
    let ns = rr.namespace().unwrap_or_default();
    let name = rr.name_any();
    let api: Api<RedisReplication> = Api::namespaced(ctx.client.clone(), &ns);
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

/// `FAILOVER` gave up (the target did not catch up in time) and the old master took writes
/// again: the status goes back to it, at the epoch the attempt used, so no one follows a
/// master that never was.
async fn roll_back_switchover(
    ctx: &Context,
    target: &Target<'_>,
    recorded: &RedisReplication,
    from: &str,
    plan: &Plan,
) {
    let (Some(intent), Ok(address)) = (&plan.intent, target.address(from)) else {
        return;
    };
    let back = Intent {
        master: from.to_string(),
        address,
        epoch: intent.epoch,
        promotes: false,
        // As before the attempt: a failed hand-back is tried again.
        hand_back_to: target
            .rr
            .status
            .as_ref()
            .and_then(|s| s.hand_back_to.clone()),
    };
    let note = match record_intent(ctx, recorded, &back).await {
        Ok(_) => format!(
            "switchover to {} failed; {from} stays the master",
            intent.master
        ),
        Err(e) => format!(
            "switchover to {} failed and the status could not be rolled back ({e}); the next \
             round resolves it",
            intent.master
        ),
    };
    ctx.event(
        recorded,
        EventType::Warning,
        "SwitchoverFailed",
        "Switchover",
        note,
    )
    .await;
}

/// Points every instance of `plan.rewire` at its upstream, closing its clients in the same
/// transaction (rule 6). The writes a returning old master took while cut off are counted.
async fn rewire(
    ctx: &Context,
    target: &Target<'_>,
    plan: &Plan,
    master_name: &str,
) -> Result<(), Error> {
    let rr = target.rr;
    for Rewire { name, upstream } in &plan.rewire {
        let old_master = target
            .instance(name)?
            .redis
            .clone()
            .filter(|r| r.is_master());
        let mut client = target.client(ctx, name).await?;
        client.change_role(Some(upstream)).await?;
        info!(instance = %name, upstream = %upstream, "rewired replica");
        crash_point("after-rewire");
        let Some(old) = old_master else {
            continue;
        };
        let discarded = match target.client(ctx, master_name).await {
            Ok(mut m) => m
                .replication_info()
                .await
                .ok()
                .and_then(|new| old.writes_after_split(&new)),
            Err(_) => None,
        };
        ctx.event(
            rr,
            EventType::Warning,
            "InstanceRejoined",
            "Demote",
            format!(
                "former master {name} now replicates from {master_name}; {} bytes of writes it \
                 took that {master_name} never received are discarded",
                discarded.map_or("an unknown number of".to_string(), |d| d.to_string())
            ),
        )
        .await;
    }
    if !plan.rewire.is_empty() {
        let moves: Vec<String> = plan
            .rewire
            .iter()
            .map(|r| {
                let upstream = target
                    .instances
                    .iter()
                    .find(|i| i.address().as_ref() == Some(&r.upstream))
                    .map_or_else(|| r.upstream.to_string(), |i| i.name.clone());
                format!("{} follows {upstream}", r.name)
            })
            .collect();
        ctx.event(
            rr,
            EventType::Normal,
            "ReplicasReconfigured",
            "Rewire",
            moves.join(", "),
        )
        .await;
    }
    Ok(())
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
        Some(Change::Refill { master, .. }) => {
            format!("standing in while {master} is refilled; failover is disabled")
        }
        Some(Change::Forced { .. }) => format!("forced by {FORCE_MASTER_ANNOTATION}"),
        Some(Change::RolledBack { target }) => format!("the change to {target} is undone"),
        Some(Change::Resume) => "resuming an interrupted promotion".into(),
        None => "no change".into(),
    }
}

/// A merge patch of the label alone: the rest of the pod may predate the current spec (and
/// most of a pod's spec cannot change).
async fn set_role_label(
    ctx: &Context,
    target: &Target<'_>,
    name: &str,
    label: Option<RoleLabel>,
) -> Result<(), Error> {
    target.instance(name)?;
    let ns = target.rr.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({"metadata": {"labels": {ROLE_LABEL: label.map(RoleLabel::as_str)}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    pods.patch(name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::kube(format!("labelling pod {ns}/{name}"), source))?;
    info!(pod = %name, role = label.map(RoleLabel::as_str).unwrap_or("none"), "role label set");
    Ok(())
}

/// Rule 7: `FAILOVER TO` pauses writes on the old master until the target has every byte, then
/// swaps roles; the target's master role is awaited (bounded).
async fn switch_over(
    ctx: &Context,
    target: &Target<'_>,
    from: &str,
    to: &str,
) -> Result<(), Error> {
    let mut old = target.client(ctx, from).await?;
    old.failover_to(&target.address(to)?, SWITCHOVER_TIMEOUT)
        .await?;
    let deadline = tokio::time::Instant::now() + SWITCHOVER_TIMEOUT + Duration::from_secs(1);
    let mut new = target.client(ctx, to).await?;
    loop {
        if new.replication_info().await?.is_master() {
            info!(from = %from, to = %to, "switchover completed");
            // FAILOVER changes the old master's role but leaves its clients connected, where
            // every write now fails with READONLY: close them so they re-resolve the master.
            return match old.disconnect_clients().await {
                Ok(()) => Ok(()),
                Err(_) => target
                    .client(ctx, from)
                    .await?
                    .disconnect_clients()
                    .await
                    .map_err(Error::from),
            };
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::PromotionNotVerified(to.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a switchover may pause writes while the target catches up.
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Safety rule 5: the decision is in the status, guarded by the resourceVersion the plan was
/// made from, before any instance changes. A conflict means someone else moved first.
async fn record_intent(
    ctx: &Context,
    rr: &RedisReplication,
    intent: &Intent,
) -> Result<RedisReplication, Error> {
    let patch = json!({
        "metadata": {"resourceVersion": rr.resource_version()},
        "status": {
            "currentMaster": intent.master,
            "masterAddress": intent.address.to_string(),
            "epoch": intent.epoch,
            "targetMaster": intent.promotes.then_some(&intent.master),
            "handBackTo": intent.hand_back_to,
        }
    });
    let ns = rr.namespace().unwrap_or_default();
    let name = rr.name_any();
    let api: Api<RedisReplication> = Api::namespaced(ctx.client.clone(), &ns);
    let updated = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| status_error(&ns, &name, source))?;
    info!(master = %intent.master, epoch = intent.epoch, "recorded master intent");
    Ok(updated)
}

/// Replaces the whole status (so cleared fields are really cleared), guarded by the
/// resourceVersion last seen.
pub async fn write_final_status(
    ctx: &Context,
    rr: &RedisReplication,
    status: &RedisReplicationStatus,
) -> Result<RedisReplication, Error> {
    let ns = rr.namespace().unwrap_or_default();
    let name = rr.name_any();
    let mut object = rr.clone();
    object.metadata.managed_fields = None;
    object.status = Some(status.clone());
    let api: Api<RedisReplication> = Api::namespaced(ctx.client.clone(), &ns);
    api.replace_status(&name, &PostParams::default(), &object)
        .await
        .map_err(|source| status_error(&ns, &name, source))
}

fn status_error(ns: &str, name: &str, source: kube::Error) -> Error {
    match &source {
        kube::Error::Api(s) if s.code == 409 => Error::StatusConflict(format!("{ns}/{name}")),
        _ => Error::kube(format!("writing status of {ns}/{name}"), source),
    }
}

/// `REPLICAOF NO ONE` (closing the instance's clients with it), then check with `INFO
/// replication` that it took.
async fn promote(ctx: &Context, target: &Target<'_>, name: &str) -> Result<(), Error> {
    let mut client = target.client(ctx, name).await?;
    client.change_role(None).await?;
    let info = client.replication_info().await?;
    if !info.is_master() {
        return Err(Error::PromotionNotVerified(name.to_string()));
    }
    info!(instance = %name, "promoted to master");
    Ok(())
}
