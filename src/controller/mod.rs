//! The reconciler: observe -> plan -> apply -> status, once per `RedisReplication` change, pod
//! change, or requeue.

mod announce;
mod apply;
mod context;
mod drift;
mod error;
mod events;
mod execute;
mod follow;
mod observe;
pub mod plan;
mod pods;
mod requests;
mod restore;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::api::requests::{FENCED_INSTANCES_ANNOTATION, HIBERNATION_ANNOTATION};
use crate::api::{Phase, RedisReplication};
use crate::labels::{FORCE_MASTER_ANNOTATION, SWITCHOVER_ANNOTATION, managed_selector};
use crate::metrics::Metrics;
use crate::monitor::{self, Monitor};
pub use context::Context;
pub use error::Error;
use error::secret_problem;
pub use observe::secret_bytes;
use plan::{FailoverPolicy, MasterDown, PlanInput, RecordedRoles};
use pods::PodIndex;

/// How long bootstrap waits for every instance to answer before choosing among those that do.
const BOOTSTRAP_GRACE: Duration = Duration::from_secs(60);

/// How often a silent master's evidence is looked at again while it is not enough yet: half
/// of one of the agent's confirmation rounds, a median 25 ms late on a hold of a second or
/// more. Reconciles from caches, without a request unless the status changes; only while a
/// master is silent.
const SILENCE_RECHECK: Duration = Duration::from_millis(50);

/// How soon a backup that cannot be restored yet (still running, unreadable) is looked for again.
const RESTORE_RETRY: Duration = Duration::from_secs(10);

/// A set following an external master is looked at this often, for the lag its status shows.
const FOLLOW_REFRESH: Duration = Duration::from_secs(30);

/// An idle, settled set is reconciled this often without any change (a resync).
const RESYNC: Duration = Duration::from_secs(300);

/// Settings of the controller.
pub struct Settings {
    /// Watch one namespace, or all of them.
    pub namespace: Option<String>,
    pub probe_timeout: Duration,
    pub probe_interval: Duration,
    pub failover_cooldown: Duration,
    /// Reconciles running at once, over all replications (0: no bound).
    pub concurrent_reconciles: u16,
    /// Identity in Events.
    pub instance: String,
    /// The operator's own namespace.
    pub operator_namespace: String,
    pub metrics: Metrics,
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
    let owned = watcher::Config::default().labels(&managed_selector());
    // One watch of the managed pods feeds both the index `observe` reads and the reconcile
    // triggers, so a reconcile woken by a pod change sees that change.
    let pod_index = Arc::new(PodIndex::default());
    // The stores keep no managed fields (kube's advice for a controller's memory): the operator
    // never reads a pod's or a replication's; nor a pod's spec (`pods::prune`).
    let pod_changes = watcher(pods, owned.clone())
        .default_backoff()
        .modify(pods::prune)
        .inspect_ok({
            let index = pod_index.clone();
            move |event| index.apply(event)
        })
        .touched_objects();
    // A change to an owned Service or ConfigMap by someone else (an edit, a deletion) marks its
    // replication's objects for re-applying (drift.rs): drift is repaired at once, and an idle
    // set re-applies nothing.
    let drifted = drift::Drifted::default();
    let service_changes = watcher(services, owned.clone())
        .default_backoff()
        .inspect_ok(drift::mark(&drifted))
        .touched_objects();
    let config_map_changes = watcher(config_maps, owned.clone())
        .default_backoff()
        .inspect_ok(drift::mark(&drifted))
        .touched_objects();
    let (monitor, fact_changes) = Monitor::new(
        monitor::Settings {
            interval: settings.probe_interval,
            timeout: settings.probe_timeout,
        },
        settings.metrics.clone(),
    );
    let ctx = Arc::new(Context {
        events: events::Publisher::new(client.clone(), "vigil-operator", &settings.instance),
        client,
        probe_timeout: settings.probe_timeout,
        probe_interval: settings.probe_interval,
        failover_cooldown: settings.failover_cooldown,
        operator_namespace: settings.operator_namespace,
        metrics: settings.metrics,
        pods: pod_index,
        monitor,
        redirects: HashMap::new(),
        drifted,
        memory: Mutex::default(),
    });
    let backups = crate::backup::run(ctx.clone(), settings.namespace.as_deref());
    let schedules = crate::backup::schedule::run(ctx.clone(), settings.namespace.as_deref());
    // Bounded: a thousand sets created at once otherwise reconcile together, each applying its
    // objects over connections of its own (a TLS handshake each for the apiserver).
    let config =
        kube::runtime::controller::Config::default().concurrency(settings.concurrent_reconciles);
    let (replication_store, replication_writer) = reflector::store();
    let replication_changes = reflector(
        replication_writer,
        watcher(replications, watcher::Config::default())
            .default_backoff()
            .modify(|rr| rr.metadata.managed_fields = None),
    )
    .applied_objects();
    let replications = Controller::for_stream(replication_changes, replication_store)
        .with_config(config)
        .owns_stream(pod_changes)
        .reconcile_on(fact_changes)
        .owns_stream(service_changes)
        .owns_stream(config_map_changes)
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
        });
    futures::join!(replications, backups, schedules);
}

async fn reconcile(rr: Arc<RedisReplication>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        namespace = rr.namespace().unwrap_or_default(),
        name = rr.name_any()
    );
    async {
        match ctx.current(&rr).await? {
            Some(current) => reconcile_inner(&current, &ctx).await,
            // Deleted meanwhile: its deletion event follows.
            None => Ok(Action::await_change()),
        }
    }
    .instrument(span)
    .await
}

async fn reconcile_inner(rr: &RedisReplication, ctx: &Context) -> Result<Action, Error> {
    if rr.metadata.deletion_timestamp.is_some() {
        // Owner references make the garbage collector remove everything we created.
        ctx.forget(rr);
        return Ok(Action::await_change());
    }
    // Every request of the round goes to this namespace.
    let ns = rr.namespace().ok_or(Error::NoNamespace)?;
    let ns = ns.as_str();
    let applied = ctx.applied_credentials(rr);
    let credentials = match &applied {
        Some(credentials) => credentials.clone(),
        None => {
            apply::ensure_objects(ctx, rr, ns).await?;
            let read = observe::read_credentials(ctx, rr, ns).await;
            ctx.announce_secret_problem(rr, read.as_ref().err()).await;
            match read {
                Ok(credentials) => credentials,
                // The instances still run with the password they had: keep watching them.
                Err(Error::MissingSecret { .. } | Error::InvalidSecret { .. })
                    if ctx.known_credentials(rr).is_some() =>
                {
                    ctx.known_credentials(rr).unwrap_or_default()
                }
                Err(e @ (Error::MissingSecret { .. } | Error::InvalidSecret { .. })) => {
                    let previous = rr.status.clone().unwrap_or_default();
                    let (reason, _) = secret_problem(&e).unwrap_or_default();
                    let status = status::blocked(
                        &previous,
                        rr.metadata.generation,
                        Timestamp::now(),
                        reason,
                        &e.to_string(),
                    );
                    if status != previous {
                        execute::write_final_status(ctx, rr, ns, &status).await?;
                    }
                    return Ok(Action::requeue(Duration::from_secs(5)));
                }
                Err(e) => return Err(e),
            }
        }
    };

    let stage = restore::Stage::of(rr);
    if stage == restore::Stage::Resolve {
        let resolved = restore::resolve(ctx, rr, ns).await?;
        return Ok(Action::requeue(if resolved {
            Duration::from_millis(200)
        } else {
            RESTORE_RETRY
        }));
    }
    let fresh_after = ctx.remember(rr, |m| m.acted_at);
    let mut observed = observe::observe(ctx, rr, ns, credentials, fresh_after).await?;
    if applied.is_none() {
        apply::sync_live_config(ctx, rr, ns, &mut observed).await;
        if ctx.spec_changed(rr) {
            for inst in observed.instances.iter().filter(|i| !i.deleting) {
                apply::apply_pod_metadata(ctx, rr, ns, inst.ordinal).await?;
            }
        }
        ctx.objects_applied(rr, observed.credentials.clone());
    }
    let previous = rr.status.clone().unwrap_or_default();
    let recorded = RecordedRoles::from(&previous);
    let annotation = |key: &str| rr.annotations().get(key).map(String::as_str);
    let requests = requests::read(
        annotation(FENCED_INSTANCES_ANNOTATION),
        annotation(HIBERNATION_ANNOTATION),
        &rr.spec,
        &previous,
    );
    let following = follow::resolve(ctx, rr, ns, &observed.credentials).await;
    let now = Timestamp::now();
    let input = PlanInput {
        // A restoring set runs its first instance alone: the others sync from it once it holds
        // the backup's data.
        desired_instances: if stage == restore::Stage::Loading {
            1
        } else {
            u32::try_from(rr.spec.instances.max(1)).unwrap_or(1)
        },
        policy: FailoverPolicy {
            enabled: rr.spec.failover.enabled,
            down_after: rr.spec.failover.down_after(),
            master_unreachable_for: ctx.master_unreachable_for(rr, &recorded, &observed.instances),
            silence_recorded_for: ctx.silence_recorded_for(rr, &previous),
            cooldown_remaining: cooldown_remaining(&previous, now, ctx.failover_cooldown),
            bootstrap_grace_over: rr
                .metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|t| now.duration_since(t.0).unsigned_abs() >= BOOTSTRAP_GRACE),
        },
        recorded,
        instances: observed.instances,
        topology: rr.spec.topology,
        switchover_to: rr.annotations().get(SWITCHOVER_ANNOTATION).cloned(),
        force_master: rr.annotations().get(FORCE_MASTER_ANNOTATION).cloned(),
        fencing: requests.fencing.clone(),
        hibernate: requests.hibernate,
        following: following.as_ref().map(|f| f.source.clone()),
    };
    let plan = plan::plan(&input);
    ctx.announce_master_health(rr, &plan).await;
    ctx.announce_pod_problems(rr, &input.instances).await;

    let target = execute::Target {
        rr,
        namespace: ns,
        instances: &input.instances,
        credentials: &observed.credentials,
        source_password: following.as_ref().and_then(|f| f.password.as_deref()),
    };
    let started = Instant::now();
    if plan.promote.is_some() {
        // A promotion, even one whose answer never comes, is a fresh confirmation of the
        // instance it reaches: a silent master's hold counts again from here (rule 9).
        ctx.remember(rr, |m| m.promoted_at = Some(started));
    }
    let latest = execute::execute(ctx, &target, &plan).await?;
    let failover = Context::failover_record(&input, &plan, started.elapsed());

    let mut status = status::build(
        &status::StatusInput {
            previous: &previous,
            generation: rr.metadata.generation,
            desired_instances: input.desired_instances,
            instances: &input.instances,
            now: Timestamp::now(),
            failover,
            secret_problem: ctx.secret_problem(rr),
            persistence_disabled: rr.spec.effective_persistence() == crate::api::Persistence::None,
            requests: &requests,
            replica_of: replica_of_status(following.as_ref(), &previous, &input, &plan),
        },
        &plan,
    );
    if stage == restore::Stage::Loading {
        let credentials = &observed.credentials;
        restore::progress(ctx, rr, ns, &input.instances, credentials, &mut status).await;
    }
    let written = if latest.status.as_ref() != Some(&status) {
        let written = execute::write_final_status(ctx, &latest, ns, &status).await?;
        ctx.status_written(rr, &previous, &status);
        written
    } else {
        latest
    };
    ctx.remember(rr, |m| {
        m.written = written.resource_version();
        if plan.acts() {
            m.acted_at = Some(Instant::now());
        }
    });
    ctx.announce_requests(rr, &previous, &status).await;
    ctx.record_metrics(rr, &previous, &status);
    if status.phase != previous.phase {
        info!(phase = ?status.phase, master = ?status.current_master, "phase changed");
    }
    // Redis-side facts wake the reconcile through the monitor; the next look without one is due
    // when a time-based decision falls due or a change is under way.
    Ok(Action::requeue(next_look(
        &input,
        &plan,
        &status,
        ctx.probe_interval,
    )))
}

/// When to look again if no fact changes: every probe interval while a change is under way or
/// the set is not Ready (so its effects are seen), when `downAfter` or the cooldown runs out for
/// an unavailable master, else after a resync period.
fn next_look(
    input: &PlanInput,
    plan: &plan::Plan,
    status: &crate::api::RedisReplicationStatus,
    probe_interval: Duration,
) -> Duration {
    let acting = plan.acts()
        || matches!(plan.request, Some(plan::RequestOutcome::Waiting(_)))
        || matches!(plan.force_request, Some(plan::RequestOutcome::Waiting(_)));
    // Nothing runs, or nothing may change until the user lifts the fence: pod and spec changes
    // wake the reconcile.
    let resting = matches!(
        plan.master,
        plan::MasterState::Hibernating | plan::MasterState::Fenced { .. }
    );
    if !acting && resting && input.instances.iter().all(|i| !i.deleting) {
        return RESYNC;
    }
    if !acting && status.phase == Some(Phase::Following) {
        return FOLLOW_REFRESH;
    }
    if acting || status.phase != Some(Phase::Ready) {
        let policy = &input.policy;
        let due = match (&plan.master_down, policy.master_unreachable_for) {
            // downAfter's end, and before it the silence's record, which starts rule 9's hold
            // (plan::record_silence): looked at only at downAfter's end or a probe interval
            // on, the record came late, and the hold ran out up to that much after downAfter.
            (Some(MasterDown::Suspected), Some(down_for)) => {
                let record = crate::isolation::record_silence_after(policy.down_after)
                    .checked_sub(down_for)
                    .filter(|left| !left.is_zero() && status.master_silent_since.is_none());
                let down = policy.down_after.checked_sub(down_for);
                record.into_iter().chain(down).min()
            }
            // Rule 9's evidence (the hold since the silence record, the replicas' stillness)
            // comes due between probes, and no probe answer marks it: looking only once per
            // probe would add up to an interval to every failover of a silent master.
            // The hold's own end is known: looked at then, not up to a recheck later.
            (Some(MasterDown::Subjective), _) if policy.enabled => {
                let hold = crate::isolation::promotion_hold(policy.down_after);
                let hold_left = policy
                    .silence_recorded_for
                    .and_then(|recorded| hold.checked_sub(recorded))
                    .filter(|left| !left.is_zero());
                Some(hold_left.map_or(SILENCE_RECHECK, |left| left.min(SILENCE_RECHECK)))
            }
            (Some(_), _) => policy.cooldown_remaining,
            _ => None,
        };
        return due.map_or(probe_interval, |d| d.min(probe_interval));
    }
    RESYNC
}

/// `status.replicaOf`: the link now while the set follows, and the last one kept until the set
/// is promoted (someone acts as master).
fn replica_of_status(
    following: Option<&follow::Following>,
    previous: &crate::api::RedisReplicationStatus,
    input: &PlanInput,
    plan: &plan::Plan,
) -> Option<crate::api::ReplicaOfStatus> {
    let acting = match &plan.master {
        plan::MasterState::Acting { name, .. } => Some(name.as_str()),
        _ => None,
    };
    let Some(following) = following else {
        return previous.replica_of.clone().filter(|_| acting.is_none());
    };
    let designated = acting.or(input.recorded.current_master.as_deref());
    let designated = input
        .instances
        .iter()
        .find(|i| Some(i.name.as_str()) == designated);
    Some(follow::report(following, designated))
}

/// Set while the last failover is more recent than the cooldown.
fn cooldown_remaining(
    status: &crate::api::RedisReplicationStatus,
    now: Timestamp,
    cooldown: Duration,
) -> Option<Duration> {
    let last = status.last_failover.as_ref()?;
    let elapsed = now.duration_since(last.time.0).unsigned_abs();
    cooldown.checked_sub(elapsed).filter(|d| !d.is_zero())
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
