//! The reconciler: observe -> plan -> apply -> status, once per `RedisReplication` change, pod
//! change, or requeue.

mod apply;
mod events;
mod execute;
mod observe;
pub mod plan;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::api::{FailoverRecord, Phase, RedisReplication};
use crate::metrics::Metrics;
use crate::monitor::{self, Monitor};
use crate::redis::Credentials;
use crate::resources::{FORCE_MASTER_ANNOTATION, SWITCHOVER_ANNOTATION};
use plan::{Change, FailoverPolicy, MasterDown, ObservedInstance, PlanInput, RecordedRoles};

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
    #[error("Secret {secret} or its key {key} is missing: create it or fix {field}")]
    MissingSecret {
        secret: String,
        key: String,
        /// The spec field naming the Secret.
        field: &'static str,
    },
    #[error("Secret {secret} cannot be used: {problem}")]
    InvalidSecret { secret: String, problem: String },
    #[error("status of {0} changed while planning; replanning from the newer state")]
    StatusConflict(String),
    #[error("instance {0} disappeared while acting on it")]
    InstanceGone(String),
    #[error("{0} did not report the master role after REPLICAOF NO ONE")]
    PromotionNotVerified(String),
    #[error("RedisReplication has no namespace")]
    NoNamespace,
    #[error("the watch of the managed pods ended; the operator is shutting down")]
    PodCacheClosed,
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
    pub events: events::Publisher,
    /// Connect and response timeout of every Redis command the operator sends.
    pub probe_timeout: Duration,
    /// How often every instance is probed while failover watches it.
    pub probe_interval: Duration,
    /// Rate limit: the least time between two failovers of one replication.
    pub failover_cooldown: Duration,
    /// Admitted by the replications' NetworkPolicies, as the operator's.
    pub operator_namespace: String,
    pub metrics: Metrics,
    /// Every pod the operator manages, from one watch (the same that wakes the reconciles).
    pub pods: Store<Pod>,
    /// The probes of every instance; they wake a reconcile when a fact changes.
    pub monitor: Monitor,
    /// Replications (namespace, name) one of whose owned objects changed since the last apply.
    drifted: Arc<Mutex<HashSet<(String, String)>>>,
    memory: Mutex<HashMap<(String, String), Memory>>,
}

/// What the operator remembers between reconciles of one replication. Lost on restart, which
/// only delays a detection by one `downAfter`.
#[derive(Default)]
struct Memory {
    /// When the recorded master first failed to answer, in the current streak.
    master_unreachable_since: Option<(String, Instant)>,
    /// The master health last announced with an Event.
    announced: Option<Announced>,
    /// The generation whose owned objects were last applied, when, and the credentials read then
    /// (kept, so the every-second probes do not read the Secrets every time).
    objects_applied: Option<(Option<i64>, Instant, Credentials)>,
    /// The stuck pods last announced with an Event, and why (pod -> reason).
    pod_problems: HashMap<String, String>,
    /// Why a Secret the spec names (password, TLS) cannot be used, as last announced (reason,
    /// message).
    secret_problem: Option<(&'static str, String)>,
    /// The resourceVersion of the replication as this operator last wrote it: a cached copy
    /// with another one may predate that write, and is read afresh.
    written: Option<String>,
    /// When the last reconcile acted: later decisions need probes taken after it.
    acted_at: Option<Instant>,
}

/// The condition reason of an unusable Secret (password or TLS).
fn secret_problem(error: &Error) -> Option<(&'static str, String)> {
    match error {
        Error::MissingSecret { .. } => Some(("SecretMissing", error.to_string())),
        Error::InvalidSecret { .. } => Some(("SecretInvalid", error.to_string())),
        _ => None,
    }
}

/// How long bootstrap waits for every instance to answer before choosing among those that do.
const BOOTSTRAP_GRACE: Duration = Duration::from_secs(60);

/// Owned objects and live settings are re-applied when the spec changes, when a watched owned
/// object (Service, ConfigMap) changes, and at least this often: the repair of drift nothing
/// watches (a deleted PodDisruptionBudget, Role, ...) and the re-read of the Secrets.
const REAPPLY_OBJECTS: Duration = Duration::from_secs(300);

/// An idle, settled set is reconciled this often without any change (a resync).
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Announced {
    Subjective,
    Objective,
}

/// Settings of the controller.
pub struct Settings {
    /// Watch one namespace, or all of them.
    pub namespace: Option<String>,
    pub probe_timeout: Duration,
    pub probe_interval: Duration,
    pub failover_cooldown: Duration,
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
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=vigil");
    // One watch of the managed pods feeds both the cache `observe` reads and the reconcile
    // triggers, so a reconcile woken by a pod change sees that change.
    let (pod_store, pod_writer) = reflector::store();
    let pod_changes = watcher(pods, owned.clone())
        .default_backoff()
        .reflect(pod_writer)
        .touched_objects();
    // A change to an owned Service or ConfigMap (someone edited or deleted it, or our own
    // apply) marks its replication's objects for re-applying: drift is repaired at once, and an
    // idle set re-applies nothing.
    let drifted = Arc::new(Mutex::new(HashSet::new()));
    let service_changes = watcher(services, owned.clone())
        .default_backoff()
        .touched_objects()
        .inspect_ok(mark_drift(&drifted));
    let config_map_changes = watcher(config_maps, owned.clone())
        .default_backoff()
        .touched_objects()
        .inspect_ok(mark_drift(&drifted));
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
        pods: pod_store,
        monitor,
        drifted,
        memory: Mutex::default(),
    });
    Controller::new(replications, watcher::Config::default())
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
        })
        .await;
}

/// Records the replication that controls `obj` as drifted.
fn mark_drift<K: ResourceExt>(
    drifted: &Arc<Mutex<HashSet<(String, String)>>>,
) -> impl Fn(&K) + use<K> {
    let drifted = drifted.clone();
    move |obj: &K| {
        let owner = obj
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "RedisReplication");
        if let (Some(owner), Some(ns)) = (owner, obj.namespace()) {
            drifted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((ns, owner.name.clone()));
        }
    }
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
    rr.namespace().ok_or(Error::NoNamespace)?;
    let applied = ctx.applied_credentials(rr);
    let credentials = match &applied {
        Some(credentials) => credentials.clone(),
        None => {
            apply::ensure_objects(ctx, rr).await?;
            let read = observe::read_credentials(ctx, rr).await;
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
                        execute::write_final_status(ctx, rr, &status).await?;
                    }
                    return Ok(Action::requeue(Duration::from_secs(5)));
                }
                Err(e) => return Err(e),
            }
        }
    };

    let fresh_after = ctx.remember(rr, |m| m.acted_at);
    let mut observed = observe::observe(ctx, rr, credentials, fresh_after).await?;
    if applied.is_none() {
        apply::sync_live_config(ctx, rr, &mut observed).await;
        if ctx.spec_changed(rr) {
            for inst in observed.instances.iter().filter(|i| !i.deleting) {
                apply::apply_pod_metadata(ctx, rr, inst.ordinal).await?;
            }
        }
        ctx.objects_applied(rr, observed.credentials.clone());
    }
    let previous = rr.status.clone().unwrap_or_default();
    let recorded = RecordedRoles::from(&previous);
    let now = Timestamp::now();
    let input = PlanInput {
        desired_instances: u32::try_from(rr.spec.instances.max(1)).unwrap_or(1),
        policy: FailoverPolicy {
            enabled: rr.spec.failover.enabled,
            down_after: Duration::from_millis(
                u64::try_from(rr.spec.failover.down_after_milliseconds).unwrap_or(0),
            ),
            master_unreachable_for: ctx.master_unreachable_for(rr, &recorded, &observed.instances),
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
    };
    let plan = plan::plan(&input);
    ctx.announce_master_health(rr, &plan).await;
    ctx.announce_pod_problems(rr, &input.instances).await;

    let target = execute::Target {
        rr,
        instances: &input.instances,
        credentials: &observed.credentials,
    };
    let started = Instant::now();
    let latest = execute::execute(ctx, &target, &plan).await?;
    let failover = Context::failover_record(&input, &plan, started.elapsed());

    let status = status::build(
        &status::StatusInput {
            previous: &previous,
            generation: rr.metadata.generation,
            desired_instances: input.desired_instances,
            instances: &input.instances,
            now: Timestamp::now(),
            failover,
            secret_problem: ctx.secret_problem(rr),
            persistence_disabled: rr.spec.effective_persistence() == crate::api::Persistence::None,
        },
        &plan,
    );
    let written = if latest.status.as_ref() != Some(&status) {
        execute::write_final_status(ctx, &latest, &status).await?
    } else {
        latest
    };
    ctx.remember(rr, |m| {
        m.written = written.resource_version();
        if plan.acts() {
            m.acted_at = Some(Instant::now());
        }
    });
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
    if acting || status.phase != Some(Phase::Ready) {
        let policy = &input.policy;
        let due = match (&plan.master_down, policy.master_unreachable_for) {
            (Some(MasterDown::Suspected), Some(down_for)) => {
                policy.down_after.checked_sub(down_for)
            }
            (Some(_), _) => policy.cooldown_remaining,
            _ => None,
        };
        return due.map_or(probe_interval, |d| d.min(probe_interval));
    }
    RESYNC
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

impl Context {
    /// Roles per instance, forgotten instances, and a completed failover.
    fn record_metrics(
        &self,
        rr: &RedisReplication,
        previous: &crate::api::RedisReplicationStatus,
        status: &crate::api::RedisReplicationStatus,
    ) {
        let (ns, name) = Self::key(rr);
        for inst in &status.instances {
            self.metrics
                .instance_role(&ns, &name, &inst.name, &inst.role);
        }
        for gone in previous
            .instances
            .iter()
            .filter(|p| status.instances.iter().all(|i| i.name != p.name))
        {
            self.metrics.forget_instance(&ns, &name, &gone.name);
        }
        if let Some(record) = &status.last_failover
            && previous.last_failover.as_ref() != Some(record)
        {
            let millis = u64::try_from(record.duration_milliseconds).unwrap_or(0);
            self.metrics
                .failover_completed(&ns, &name, Duration::from_millis(millis));
        }
    }

    fn key(rr: &RedisReplication) -> (String, String) {
        (rr.namespace().unwrap_or_default(), rr.name_any())
    }

    /// Runs `f` on what is remembered of `rr`.
    fn remember<T>(&self, rr: &RedisReplication, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        f(memory.entry(Self::key(rr)).or_default())
    }

    /// The replication, read afresh when the cached copy may predate this operator's last write
    /// to it (its watch event not in yet): planning from it would redo what was just done.
    /// `None` when it is gone.
    async fn current(&self, rr: &RedisReplication) -> Result<Option<RedisReplication>, Error> {
        let written = self.remember(rr, |m| m.written.clone());
        if written.is_none() || written == rr.resource_version() {
            return Ok(Some(rr.clone()));
        }
        let (ns, name) = Self::key(rr);
        let api: Api<RedisReplication> = Api::namespaced(self.client.clone(), &ns);
        match api.get_opt(&name).await {
            Ok(found) => Ok(found),
            Err(source) => Err(Error::kube(format!("reading {ns}/{name}"), source)),
        }
    }

    /// The credentials when owned objects were last applied, unless a re-apply is due (the spec
    /// or an owned object changed, or `REAPPLY_OBJECTS` passed): then `None`, and the caller
    /// applies and re-reads.
    fn applied_credentials(&self, rr: &RedisReplication) -> Option<Credentials> {
        let drifted = self
            .drifted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Self::key(rr));
        if drifted {
            return None;
        }
        self.remember(rr, |m| match &m.objects_applied {
            Some((generation, at, credentials))
                if *generation == rr.metadata.generation && at.elapsed() < REAPPLY_OBJECTS =>
            {
                Some(credentials.clone())
            }
            _ => None,
        })
    }

    /// The spec changed since owned objects were last applied (or the operator just started).
    fn spec_changed(&self, rr: &RedisReplication) -> bool {
        self.remember(rr, |m| {
            m.objects_applied
                .as_ref()
                .is_none_or(|(generation, _, _)| *generation != rr.metadata.generation)
        })
    }

    fn objects_applied(&self, rr: &RedisReplication, credentials: Credentials) {
        self.remember(rr, |m| {
            m.objects_applied = Some((rr.metadata.generation, Instant::now(), credentials));
        });
    }

    fn forget(&self, rr: &RedisReplication) {
        let key = Self::key(rr);
        self.monitor.forget(&key.0, &key.1);
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// How long the recorded master has not answered as master (unreachable, pod missing, or
    /// restarted and fenced): the start of a failure, for `downAfter` and `lastFailover`.
    fn master_unreachable_for(
        &self,
        rr: &RedisReplication,
        recorded: &RecordedRoles,
        instances: &[plan::ObservedInstance],
    ) -> Option<Duration> {
        let master = recorded.current_master.as_ref()?;
        let answered = instances
            .iter()
            .any(|i| &i.name == master && i.redis.as_ref().is_some_and(|r| r.is_master()));
        self.remember(rr, |entry| {
            if answered {
                entry.master_unreachable_since = None;
                return None;
            }
            let since = match &entry.master_unreachable_since {
                Some((name, since)) if name == master => *since,
                _ => {
                    let now = Instant::now();
                    entry.master_unreachable_since = Some((master.clone(), now));
                    now
                }
            };
            Some(since.elapsed())
        })
    }

    /// Events on transitions only: MasterDown (+sdown), MasterObjectivelyDown (+odown).
    async fn announce_master_health(&self, rr: &RedisReplication, plan: &plan::Plan) {
        let now = match &plan.master_down {
            Some(MasterDown::Subjective) => Some(Announced::Subjective),
            Some(MasterDown::Objective { .. }) => Some(Announced::Objective),
            _ => None,
        };
        let before = self.remember(rr, |m| std::mem::replace(&mut m.announced, now));
        if now == before {
            return;
        }
        let master = rr
            .status
            .as_ref()
            .and_then(|s| s.current_master.clone())
            .unwrap_or_default();
        match &plan.master_down {
            Some(MasterDown::Subjective) => {
                let note = format!("master {master} does not answer the operator's probes");
                self.event(rr, EventType::Warning, "MasterDown", "Probe", note)
                    .await;
            }
            Some(MasterDown::Objective { evidence }) => {
                let note = format!("master {master} is down: {evidence}");
                self.event(
                    rr,
                    EventType::Warning,
                    "MasterObjectivelyDown",
                    "Probe",
                    note,
                )
                .await;
            }
            _ => {}
        }
    }

    /// The credentials in use before a Secret became unusable, if any.
    fn known_credentials(&self, rr: &RedisReplication) -> Option<Credentials> {
        self.remember(rr, |m| {
            m.objects_applied.as_ref().map(|(_, _, c)| c.clone())
        })
    }

    fn secret_problem(&self, rr: &RedisReplication) -> Option<(&'static str, String)> {
        self.remember(rr, |m| m.secret_problem.clone())
    }

    /// Remembers whether the Secrets are usable, with a Warning Event when one stops being.
    async fn announce_secret_problem(&self, rr: &RedisReplication, error: Option<&Error>) {
        let now = error.and_then(secret_problem);
        let before = self.remember(rr, |m| {
            std::mem::replace(&mut m.secret_problem, now.clone())
        });
        if let Some((reason, message)) = now
            && before.as_ref().map(|(r, _)| r) != Some(&reason)
        {
            warn!(reason, message = %message, "Secret unusable");
            self.event(rr, EventType::Warning, reason, "ReadSecret", message)
                .await;
        }
    }

    /// A Warning Event when a pod becomes stuck or is stuck for another reason.
    async fn announce_pod_problems(&self, rr: &RedisReplication, instances: &[ObservedInstance]) {
        let now: HashMap<String, String> = instances
            .iter()
            .filter_map(|i| Some((i.name.clone(), i.problem.as_ref()?.reason.clone())))
            .collect();
        let before = self.remember(rr, |m| std::mem::replace(&mut m.pod_problems, now.clone()));
        for inst in instances {
            let Some(problem) = &inst.problem else {
                continue;
            };
            if before.get(&inst.name) == Some(&problem.reason) {
                continue;
            }
            warn!(pod = %inst.name, reason = %problem.reason, message = %problem.message, "instance cannot run");
            self.pod_event(
                rr,
                EventType::Warning,
                &inst.name,
                "InstanceFailing",
                "Observe",
                format!("{}: {}: {}", inst.name, problem.reason, problem.message),
            )
            .await;
        }
    }

    /// The record of a failover or switchover this plan completes.
    fn failover_record(
        input: &PlanInput,
        plan: &plan::Plan,
        acting_took: Duration,
    ) -> Option<FailoverRecord> {
        let intent = plan.intent.as_ref()?;
        let (kind, from, reason) = match plan.change.as_ref()? {
            Change::Failover { from, reason } => ("Failover", from, reason.clone()),
            Change::Switchover { from, reason } => ("Switchover", from, reason.clone()),
            _ => return None,
        };
        let duration = input.policy.master_unreachable_for.unwrap_or_default() + acting_took;
        Some(FailoverRecord {
            time: Time(Timestamp::now()),
            kind: kind.into(),
            from: from.clone(),
            to: intent.master.clone(),
            reason,
            duration_milliseconds: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
            epoch: intent.epoch,
        })
    }
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
