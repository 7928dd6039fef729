//! The steps that change an instance's role: promotion, switchover (and its roll-back),
//! rewiring, and the role labels the Services select on.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::info;

use super::Target;
use super::intent::record_intent;
use crate::api::RedisReplication;
use crate::controller::plan::{Intent, Plan, Rewire};
use crate::controller::{Context, Error};
use crate::crash_point::crash_point;
use crate::labels::{ROLE_LABEL, RoleLabel};
use crate::redis::{Address, FENCE_HOST, FENCE_PORT, InstanceClient};
use crate::resources::FIELD_MANAGER;

/// `FAILOVER` gave up (the target did not catch up in time) and the old master took writes
/// again: the status goes back to it, at the epoch the attempt used, so no one follows a
/// master that never was.
pub(super) async fn roll_back_switchover(
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
    let note = match record_intent(ctx, recorded, target.namespace, &back).await {
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

/// Points one instance at its upstream, closing its clients in the same transaction (rule 6).
/// The writes a returning old master took while cut off are counted. Returns "<name> follows
/// <upstream>".
pub(super) async fn rewire_one(
    ctx: &Context,
    target: &Target<'_>,
    rewire: &Rewire,
    master_name: &str,
) -> Result<String, Error> {
    let rr = target.rr;
    let Rewire { name, upstream } = rewire;
    // A master, or a fenced instance (a master that fenced itself, or restarted): either may
    // hold writes past the point where the current master's history split from it.
    let old_master = target
        .instance(name)?
        .redis
        .clone()
        .filter(|r| r.is_master() || r.is_fenced());
    let mut client = target.client(ctx, name).await?;
    if target.source_password.is_some() {
        // It may have been the designated master, authenticating to the external one.
        set_masterauth(&mut client, target.credentials.password.as_deref()).await?;
    }
    client.change_role(Some(upstream)).await?;
    info!(instance = %name, upstream = %upstream, "rewired replica");
    crash_point("after-rewire");
    if let Some(old) = old_master {
        let discarded = match target.client(ctx, master_name).await {
            Ok(mut m) => m
                .replication_info()
                .await
                .ok()
                .and_then(|new| old.writes_after_split(&new)),
            Err(_) => None,
        };
        if old.is_master() || discarded.is_some_and(|d| d > 0) {
            let note = format!(
                "former master {name} now replicates from {master_name}; {} bytes of its \
                 replication stream that {master_name} never received (writes it took, and \
                 its heartbeats) are discarded",
                discarded.map_or("an unknown number of".to_string(), |d| d.to_string())
            );
            ctx.event(rr, EventType::Warning, "InstanceRejoined", "Demote", note)
                .await;
        }
    }
    let upstream_name = target
        .instances
        .iter()
        .find(|i| i.address().as_ref() == Some(upstream))
        .map_or_else(|| upstream.to_string(), |i| i.name.clone());
    Ok(format!("{name} follows {upstream_name}"))
}

/// A merge patch of the label alone: the rest of the pod may predate the current spec (and
/// most of a pod's spec cannot change).
pub(super) async fn set_role_label(
    ctx: &Context,
    target: &Target<'_>,
    name: &str,
    label: Option<RoleLabel>,
) -> Result<(), Error> {
    target.instance(name)?;
    let ns = target.namespace;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
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

/// Fenced by request: `REPLICAOF` nobody, closing its clients in the same transaction. Its data
/// stays as it is: nothing replicates into it and it takes no writes.
pub(super) async fn fence(ctx: &Context, target: &Target<'_>, name: &str) -> Result<(), Error> {
    let mut client = target.client(ctx, name).await?;
    client
        .change_role(Some(&Address::new(FENCE_HOST, FENCE_PORT)))
        .await?;
    info!(instance = %name, "fenced by request");
    Ok(())
}

/// `REPLICAOF NO ONE` (closing the instance's clients with it), then check with `INFO
/// replication` that it took.
pub(super) async fn promote(ctx: &Context, target: &Target<'_>, name: &str) -> Result<(), Error> {
    let mut client = target.client(ctx, name).await?;
    client.change_role(None).await?;
    let info = client.replication_info().await?;
    if !info.is_master() {
        return Err(Error::PromotionNotVerified(name.to_string()));
    }
    info!(instance = %name, "promoted to master");
    Ok(())
}

/// `spec.replicaOf`: the designated master follows the external master (with its password when
/// it has one of its own), closing its clients in the same transaction.
pub(super) async fn follow_source(
    ctx: &Context,
    target: &Target<'_>,
    rewire: &Rewire,
) -> Result<(), Error> {
    let mut client = target.client(ctx, &rewire.name).await?;
    if let Some(password) = target.source_password {
        set_masterauth(&mut client, Some(password)).await?;
    }
    client.change_role(Some(&rewire.upstream)).await?;
    info!(instance = %rewire.name, source = %rewire.upstream, "following the external master");
    Ok(())
}

/// A promoted designated master authenticates with the set's own password again, should it
/// ever follow one of its own instances.
pub(super) async fn own_masterauth(
    ctx: &Context,
    target: &Target<'_>,
    name: &str,
) -> Result<(), Error> {
    let mut client = target.client(ctx, name).await?;
    set_masterauth(&mut client, target.credentials.password.as_deref()).await
}

async fn set_masterauth(client: &mut InstanceClient, password: Option<&str>) -> Result<(), Error> {
    match password {
        Some(password) => Ok(client.config_set("masterauth", password).await?),
        None => Ok(()),
    }
}
