//! Writing the status: the intent before any instance is touched (rule 5), and the final
//! status, both guarded by the resourceVersion the plan was made from.

use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::api::{RedisReplication, RedisReplicationStatus};
use crate::controller::plan::Intent;
use crate::controller::{Context, Error};

/// Safety rule 5: the decision is in the status, guarded by the resourceVersion the plan was
/// made from, before any instance changes. A conflict means someone else moved first.
pub(super) async fn record_intent(
    ctx: &Context,
    rr: &RedisReplication,
    ns: &str,
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
    let name = rr.name_any();
    let api: Api<RedisReplication> = Api::namespaced(ctx.client.clone(), ns);
    let updated = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| status_error(ns, &name, source))?;
    info!(master = %intent.master, epoch = intent.epoch, "recorded master intent");
    Ok(updated)
}

/// Replaces the whole status (so cleared fields are really cleared), guarded by the
/// resourceVersion last seen.
pub async fn write_final_status(
    ctx: &Context,
    rr: &RedisReplication,
    ns: &str,
    status: &RedisReplicationStatus,
) -> Result<RedisReplication, Error> {
    let name = rr.name_any();
    let mut object = rr.clone();
    object.metadata.managed_fields = None;
    object.status = Some(status.clone());
    let api: Api<RedisReplication> = Api::namespaced(ctx.client.clone(), ns);
    api.replace_status(&name, &PostParams::default(), &object)
        .await
        .map_err(|source| status_error(ns, &name, source))
}

pub(super) fn status_error(ns: &str, name: &str, source: kube::Error) -> Error {
    match &source {
        kube::Error::Api(s) if s.code == 409 => Error::StatusConflict(format!("{ns}/{name}")),
        _ => Error::kube(format!("writing status of {ns}/{name}"), source),
    }
}
