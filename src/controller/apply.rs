//! Carrying out a plan, in the order the safety rules need: stray master labels first, intent
//! written before any instance is touched, promotion verified before the master label moves.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::info;

use super::plan::{Intent, ObservedInstance, Plan};
use super::{Context, Error};
use crate::api::{RedisReplication, RedisReplicationStatus};
use crate::redis::{Address, InstanceClient};
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

/// The generated password is made once; an existing Secret is never rewritten.
async fn ensure_auth_secret(ctx: &Context, rr: &RedisReplication, ns: &str) -> Result<(), Error> {
    let password: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let Some(secret) = resources::auth_secret(rr, &password) else {
        return Ok(());
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = secret.name_any();
    let exists = api
        .get_opt(&name)
        .await
        .map_err(|source| Error::kube(format!("reading Secret {ns}/{name}"), source))?
        .is_some();
    if !exists {
        apply::<Secret>(ctx, ns, &secret).await?;
        info!(secret = %name, "generated auth secret");
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

/// Executes the plan. Returns the replication as last written (its resourceVersion matters for
/// the final status write).
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
        let pod = instance_pod(rr, *ordinal, None);
        info!(pod = %pod.name_any(), "creating instance");
        apply(ctx, &ns, &pod).await?;
    }

    let (master_label, other_labels): (Vec<_>, Vec<_>) = plan
        .relabel
        .iter()
        .partition(|(_, label)| *label == Some(RoleLabel::Master));
    for (name, label) in other_labels {
        relabel(ctx, target, name, *label).await?;
    }

    let mut current = rr.clone();
    if let Some(intent) = &plan.intent {
        current = record_intent(ctx, rr, intent).await?;
    }
    let password = target.password;
    if let Some(name) = &plan.promote {
        let address = instance_address(target, name)?;
        promote(&address, password, ctx).await?;
        ctx.event(
            rr,
            EventType::Normal,
            "ReplicaPromoted",
            "Promote",
            format!("{name} is now the master at {address}"),
        )
        .await;
    }
    for (name, label) in master_label {
        relabel(ctx, target, name, *label).await?;
    }
    if let super::plan::MasterState::Acting {
        address: master, ..
    } = &plan.master
    {
        for name in &plan.rewire {
            let address = instance_address(target, name)?;
            let mut client = InstanceClient::connect(&address, password, ctx.probe_timeout).await?;
            client.replicate_from(master).await?;
            info!(instance = %name, master = %master, "rewired replica");
        }
        if !plan.rewire.is_empty() {
            ctx.event(
                rr,
                EventType::Normal,
                "ReplicasReconfigured",
                "Rewire",
                format!("{} now replicate from {master}", plan.rewire.join(", ")),
            )
            .await;
        }
    }
    Ok(current)
}

fn instance_address(target: &Target<'_>, name: &str) -> Result<Address, Error> {
    target
        .instances
        .iter()
        .find(|i| i.name == name)
        .and_then(ObservedInstance::address)
        .ok_or_else(|| Error::InstanceGone(name.to_string()))
}

async fn relabel(
    ctx: &Context,
    target: &Target<'_>,
    name: &str,
    label: Option<RoleLabel>,
) -> Result<(), Error> {
    let Some(inst) = target.instances.iter().find(|i| i.name == name) else {
        return Err(Error::InstanceGone(name.to_string()));
    };
    let ns = target.rr.namespace().unwrap_or_default();
    apply(ctx, &ns, &instance_pod(target.rr, inst.ordinal, label)).await?;
    info!(pod = %name, role = label.map(RoleLabel::as_str).unwrap_or("none"), "role label set");
    Ok(())
}

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
    let updated = write_status(ctx, rr, patch).await?;
    info!(master = %intent.master, epoch = intent.epoch, "recorded master intent");
    Ok(updated)
}

/// Writes the final status, guarded by the resourceVersion last seen.
pub async fn write_final_status(
    ctx: &Context,
    rr: &RedisReplication,
    status: &RedisReplicationStatus,
) -> Result<RedisReplication, Error> {
    let patch = json!({
        "metadata": {"resourceVersion": rr.resource_version()},
        "status": status,
    });
    write_status(ctx, rr, patch).await
}

async fn write_status(
    ctx: &Context,
    rr: &RedisReplication,
    patch: serde_json::Value,
) -> Result<RedisReplication, Error> {
    let ns = rr.namespace().unwrap_or_default();
    let name = rr.name_any();
    let api: Api<RedisReplication> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| match &source {
            kube::Error::Api(s) if s.code == 409 => Error::StatusConflict(format!("{ns}/{name}")),
            _ => Error::kube(format!("writing status of {ns}/{name}"), source),
        })
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
