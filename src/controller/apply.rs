//! Applying the objects a replication owns (server-side apply under one field manager) and the
//! settings that follow the spec live.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::info;

use super::observe::Observation;
use super::{Context, Error};
use crate::api::RedisReplication;
use crate::labels::CONFIG_ANNOTATION;
use crate::redis::InstanceClient;
use crate::redis_conf::MinReplicas;
use crate::resources::{self, FIELD_MANAGER, POD_METADATA_MANAGER};

/// A namespaced object the operator writes.
pub(super) trait Owned:
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

/// Server-side applies every object the replication owns besides its pods. They do not depend
/// on one another, so they go out at once: a new set waits one round trip for them, not eleven;
/// only the RoleBinding waits for its Role (see `apply_binding`).
pub async fn ensure_objects(ctx: &Context, rr: &RedisReplication, ns: &str) -> Result<(), Error> {
    let name = rr.name_any();
    let (budget, policy) = (
        resources::disruption_budget_name(&name),
        resources::network_policy_name(&name),
    );
    let (account, role) = (
        resources::instance_service_account(rr),
        resources::instance_role(rr),
    );
    let config = resources::config_map(rr);
    let (headless, master, replicas) = (
        resources::headless_service(rr),
        resources::master_service(rr),
        resources::replicas_service(rr),
    );
    let binding = async {
        apply(ctx, ns, &role).await?;
        apply_binding(ctx, ns, &resources::instance_role_binding(rr)).await
    };
    futures::try_join!(
        apply(ctx, ns, &account),
        binding,
        apply(ctx, ns, &config),
        apply(ctx, ns, &headless),
        apply(ctx, ns, &master),
        apply(ctx, ns, &replicas),
        ensure_optional(ctx, rr, ns, &budget, resources::pod_disruption_budget(rr)),
        ensure_optional(
            ctx,
            rr,
            ns,
            &policy,
            resources::network_policy(rr, &ctx.operator_namespace),
        ),
        ensure_auth_secret(ctx, rr, ns),
    )?;
    Ok(())
}

/// How long a new Role may stay unknown to the apiserver's authorizer (below).
const BINDING_PATIENCE: Duration = Duration::from_secs(2);

/// Applies the RoleBinding of a Role just applied. Binding it, the operator must hold what the
/// Role grants, which the apiserver checks against its authorizer's cache of Roles; until that
/// cache has the new Role it answers 404 (seen for 0.2-2 s on a busy apiserver). Retried with a
/// doubling pause rather than failing the reconcile, which would wait 2 s more per new set.
async fn apply_binding(ctx: &Context, ns: &str, binding: &RoleBinding) -> Result<(), Error> {
    let mut pause = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    loop {
        match apply(ctx, ns, binding).await {
            Err(Error::Kube {
                source: kube::Error::Api(status),
                ..
            }) if status.code == 404 && waited < BINDING_PATIENCE => {
                tokio::time::sleep(pause).await;
                waited += pause;
                pause *= 2;
            }
            result => return result.map(drop),
        }
    }
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
    ns: &str,
    ordinal: u32,
) -> Result<(), Error> {
    let metadata = resources::instance_pod_metadata(rr, ordinal);
    apply_as(ctx, ns, &metadata, POD_METADATA_MANAGER)
        .await
        .map(drop)
}

/// Settings that follow the spec without a restart, with `CONFIG SET` on every reachable
/// instance: the failover settings, and a changed `config` where Redis takes it live (the pod
/// then records it, and is no longer outdated). A `config` that cannot go live (a key removed, a
/// setting Redis only reads at start) leaves the instance to the rolling update. A failure is
/// logged and retried at the next re-apply; it never blocks a failover.
pub async fn sync_live_config(
    ctx: &Context,
    rr: &RedisReplication,
    ns: &str,
    observed: &mut Observation,
) {
    let settings = MinReplicas::from_spec(&rr.spec.failover).settings();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
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
pub(super) async fn create_if_absent<K>(ctx: &Context, ns: &str, obj: &K) -> Result<(), Error>
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

pub(super) async fn apply<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K, Error>
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
