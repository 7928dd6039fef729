//! Carrying out a plan, in the order the safety rules need: stray master labels first, intent
//! written before any instance is touched, promotion verified before the master label moves.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::info;

use super::observe::Observation;
use super::plan::{Change, Intent, MasterState, ObservedInstance, Plan};
use super::{Context, Error};
use crate::api::{RedisReplication, RedisReplicationStatus};
use crate::crash_point::crash_point;
use crate::redis::{Address, InstanceClient};
use crate::redis_conf::MinReplicas;
use crate::resources::{self, FIELD_MANAGER, RoleLabel, instance_pod};

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
    ensure_auth_secret(ctx, rr, &ns).await
}

/// Settings that follow the spec without a restart: `CONFIG SET` on every reachable instance.
/// A failure is logged and retried at the next re-apply; it never blocks a failover.
pub async fn sync_live_config(ctx: &Context, rr: &RedisReplication, observed: &Observation) {
    let settings = MinReplicas::from_spec(&rr.spec.failover).settings();
    for inst in observed.instances.iter().filter(|i| i.redis.is_some()) {
        let Some(address) = inst.address() else {
            continue;
        };
        let result = async {
            let mut client =
                InstanceClient::connect(&address, observed.password.as_deref(), ctx.probe_timeout)
                    .await?;
            for (key, value) in &settings {
                client.config_set(key, value).await?;
            }
            Ok::<_, crate::redis::Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(instance = %inst.name, error = %e, "cannot apply live settings");
        }
    }
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
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
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
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| Error::kube(format!("applying {} {ns}/{name}", K::kind(&())), source))
}

/// Everything a plan needs to act on.
pub struct Target<'a> {
    pub rr: &'a RedisReplication,
    pub instances: &'a [ObservedInstance],
    pub password: Option<&'a str>,
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
        Ok(InstanceClient::connect(&address, self.password, ctx.probe_timeout).await?)
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
        let pod = instance_pod(rr, *ordinal, None);
        info!(pod = %pod.name_any(), "creating instance");
        apply(ctx, &ns, &pod).await?;
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
        if let Some(Change::Failover { from, .. } | Change::Switchover { from }) = &plan.change {
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
            Some(from) => switch_over(ctx, target, from, &address).await?,
            None => promote(&address, target.password, ctx).await?,
        }
        crash_point("after-promote");
        if let Some(Change::Restore { discarded_bytes }) = plan.change
            && discarded_bytes > 0
        {
            ctx.event(
                rr,
                EventType::Warning,
                "MasterRestoredWithLessData",
                "Promote",
                format!(
                    "failover is disabled and {name} restarted with {discarded_bytes} bytes less \
                     than its replicas had; they resync from it and lose that data \
                     (enable persistence or failover to avoid this)"
                ),
            )
            .await;
        }
        ctx.event(
            rr,
            EventType::Normal,
            "ReplicaPromoted",
            "Promote",
            format!("{name} is now the master at {address}"),
        )
        .await;
    }
    if let Some(name) = &plan.label_master {
        set_role_label(ctx, target, name, Some(RoleLabel::Master)).await?;
        crash_point("after-master-label");
    }

    if let MasterState::Acting { name, address } = &plan.master {
        rewire(ctx, target, plan, name, address).await?;
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
    Ok(current)
}

/// Points every instance of `plan.rewire` at the master. Rule 6: a returning old master also
/// loses its clients, and the writes it took while cut off are counted, not kept.
async fn rewire(
    ctx: &Context,
    target: &Target<'_>,
    plan: &Plan,
    master_name: &str,
    master: &Address,
) -> Result<(), Error> {
    let rr = target.rr;
    for name in &plan.rewire {
        let old_master = target
            .instance(name)?
            .redis
            .clone()
            .filter(|r| r.is_master());
        let mut client = target.client(ctx, name).await?;
        client.replicate_from(master).await?;
        info!(instance = %name, master = %master, "rewired replica");
        crash_point("after-rewire");
        let Some(old) = old_master else {
            continue;
        };
        client.disconnect_clients().await?;
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
                 took after the failover are discarded",
                discarded.map_or("an unknown number of".to_string(), |d| d.to_string())
            ),
        )
        .await;
    }
    if !plan.rewire.is_empty() {
        ctx.event(
            rr,
            EventType::Normal,
            "ReplicasReconfigured",
            "Rewire",
            format!(
                "{} now replicate from {master_name}",
                plan.rewire.join(", ")
            ),
        )
        .await;
    }
    Ok(())
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
        Some(Change::Switchover { from }) => format!("switchover: pod {from} is being deleted"),
        Some(Change::Bootstrap) => "bootstrap".into(),
        Some(Change::Restore { .. }) => "the master restarted; failover is disabled".into(),
        Some(Change::Resume) => "resuming an interrupted promotion".into(),
        None => "no change".into(),
    }
}

async fn set_role_label(
    ctx: &Context,
    target: &Target<'_>,
    name: &str,
    label: Option<RoleLabel>,
) -> Result<(), Error> {
    let inst = target.instance(name)?;
    let ns = target.rr.namespace().unwrap_or_default();
    apply(ctx, &ns, &instance_pod(target.rr, inst.ordinal, label)).await?;
    info!(pod = %name, role = label.map(RoleLabel::as_str).unwrap_or("none"), "role label set");
    Ok(())
}

/// Rule 7: `FAILOVER TO` pauses writes on the old master until the target has every byte, then
/// swaps roles; the target's master role is awaited (bounded).
async fn switch_over(
    ctx: &Context,
    target: &Target<'_>,
    from: &str,
    to: &Address,
) -> Result<(), Error> {
    let mut old = target.client(ctx, from).await?;
    old.failover_to(to, SWITCHOVER_TIMEOUT).await?;
    let deadline = tokio::time::Instant::now() + SWITCHOVER_TIMEOUT + Duration::from_secs(1);
    let mut new = InstanceClient::connect(to, target.password, ctx.probe_timeout).await?;
    loop {
        if new.replication_info().await?.is_master() {
            info!(from = %from, to = %to, "switchover completed");
            return Ok(());
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

/// `REPLICAOF NO ONE`, then check with `INFO replication` that it took.
async fn promote(address: &Address, password: Option<&str>, ctx: &Context) -> Result<(), Error> {
    let mut client = InstanceClient::connect(address, password, ctx.probe_timeout).await?;
    client.promote().await?;
    let info = client.replication_info().await?;
    if !info.is_master() {
        return Err(Error::PromotionNotVerified(address.to_string()));
    }
    info!(instance = %address, "promoted to master");
    Ok(())
}

impl Context {
    /// Publishes an Event on the replication; failing to do so never fails a reconcile.
    pub async fn event(
        &self,
        rr: &RedisReplication,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &rr.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}
