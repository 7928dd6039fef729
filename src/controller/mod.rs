//! The reconciler: observe -> plan -> apply -> status, once per `RedisReplication` change, pod
//! change, or requeue.

mod apply;
mod observe;
pub mod plan;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::api::{Phase, RedisReplication};
use plan::{PlanInput, RecordedRoles};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Redis(#[from] crate::redis::Error),
    #[error("Secret {secret} has no key {key}: create it or fix spec.auth.existingSecret")]
    MissingSecret { secret: String, key: String },
    #[error("key {key} of Secret {secret} is not valid UTF-8")]
    InvalidSecret { secret: String, key: String },
    #[error("status of {0} changed while planning; replanning from the newer state")]
    StatusConflict(String),
    #[error("instance {0} disappeared while acting on it")]
    InstanceGone(String),
    #[error("{0} did not report the master role after REPLICAOF NO ONE")]
    PromotionNotVerified(String),
    #[error("RedisReplication has no namespace")]
    NoNamespace,
}

impl Error {
    fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            context: context.into(),
            source,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// Connect and response timeout of every Redis command the operator sends.
    pub probe_timeout: Duration,
}

/// Settings of the controller.
pub struct Settings {
    /// Watch one namespace, or all of them.
    pub namespace: Option<String>,
    pub probe_timeout: Duration,
    /// Identity in Events.
    pub instance: String,
}

/// Runs the controller until a shutdown signal.
pub async fn run(client: Client, settings: Settings) {
    let (replications, pods, services, config_maps) = match &settings.namespace {
        Some(ns) => (
            Api::<RedisReplication>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
            Api::<ConfigMap>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=vigil");
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "vigil-operator".into(),
                instance: Some(settings.instance),
            },
        ),
        client,
        probe_timeout: settings.probe_timeout,
    });
    Controller::new(replications, watcher::Config::default())
        .owns(pods, owned.clone())
        .owns(services, owned.clone())
        .owns(config_maps, owned)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            use kube::runtime::controller::Error as ControllerError;
            match result {
                // Reconciler errors are logged by `error_policy`; a missing object was just
                // deleted.
                Ok(_)
                | Err(ControllerError::ReconcilerFailed(..))
                | Err(ControllerError::ObjectNotFound(_)) => {}
                Err(e) => warn!(error = %e, "controller error"),
            }
        })
        .await;
}

async fn reconcile(rr: Arc<RedisReplication>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        namespace = rr.namespace().unwrap_or_default(),
        name = rr.name_any()
    );
    reconcile_inner(&rr, &ctx).instrument(span).await
}

async fn reconcile_inner(rr: &RedisReplication, ctx: &Context) -> Result<Action, Error> {
    if rr.metadata.deletion_timestamp.is_some() {
        // Owner references make the garbage collector remove everything we created.
        return Ok(Action::await_change());
    }
    rr.namespace().ok_or(Error::NoNamespace)?;
    apply::ensure_objects(ctx, rr).await?;

    let observed = observe::observe(ctx, rr).await?;
    let previous = rr.status.clone().unwrap_or_default();
    let input = PlanInput {
        replication: rr.name_any(),
        desired_instances: u32::try_from(rr.spec.instances.max(1)).unwrap_or(1),
        recorded: RecordedRoles {
            current_master: previous.current_master.clone(),
            master_address: previous.master_address.clone(),
            epoch: previous.epoch,
            target_master: previous.target_master.clone(),
        },
        instances: observed.instances.clone(),
    };
    let plan = plan::plan(&input);

    let target = apply::Target {
        rr,
        instances: &observed.instances,
        password: observed.password.as_deref(),
    };
    let latest = apply::execute(ctx, &target, &plan).await?;

    let status = status::build(
        &status::StatusInput {
            previous: &previous,
            generation: rr.metadata.generation,
            desired_instances: input.desired_instances,
            instances: &observed.instances,
            now: Timestamp::now(),
        },
        &plan,
    );
    let settled = status.phase == Some(Phase::Ready) && plan.create.is_empty();
    if latest.status.as_ref() != Some(&status) {
        apply::write_final_status(ctx, &latest, &status).await?;
    }
    if status.phase != previous.phase {
        info!(phase = ?status.phase, master = ?status.current_master, "phase changed");
    }
    // Redis-side changes (a replica finishing its sync) raise no Kubernetes event: poll until
    // settled, then slowly.
    Ok(Action::requeue(if settled {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(1)
    }))
}

fn error_policy(rr: Arc<RedisReplication>, error: &Error, _ctx: Arc<Context>) -> Action {
    match error {
        // Expected: the plan was made from a stale cache; replan from the newer state.
        Error::StatusConflict(_) => {
            tracing::debug!(name = %rr.name_any(), "status changed while planning; replanning");
            Action::requeue(Duration::from_millis(200))
        }
        _ => {
            warn!(name = %rr.name_any(), error = %error, "reconcile error");
            Action::requeue(Duration::from_secs(2))
        }
    }
}
