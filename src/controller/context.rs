//! The operator's shared state: clients, caches, the monitor, and what it remembers between
//! reconciles of each replication.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client, ResourceExt};

use super::plan::{self, Change, PlanInput, RecordedRoles};
use super::pods::PodIndex;
use super::{Error, events};
use crate::api::{FailoverKind, FailoverRecord, RedisReplication};
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::redis::{Address, Credentials, InstanceClient};

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
    /// Every pod the operator manages, by replication, from one watch (the same that wakes the
    /// reconciles).
    pub pods: Arc<PodIndex>,
    /// The probes of every instance; they wake a reconcile when a fact changes.
    pub monitor: Monitor,
    /// Instances reached at another address than their pod's. Empty in the operator; the
    /// executor's tests put stand-in instances there.
    pub(super) redirects: HashMap<Address, Address>,
    /// Replications (namespace, name) one of whose owned objects someone else changed or deleted
    /// since the last apply (drift.rs).
    pub(super) drifted: super::drift::Drifted,
    pub(super) memory: Mutex<HashMap<(String, String), Memory>>,
}

/// What the operator remembers between reconciles of one replication. Lost on restart, which
/// only delays a detection by one `downAfter`.
#[derive(Default)]
pub(super) struct Memory {
    /// When the recorded master first failed to answer, in the current streak.
    pub(super) master_unreachable_since: Option<(String, Instant)>,
    /// When this operator first knew the status to record the master silent: the answer to
    /// its own write of the record, or the first reconcile that read it. Rule 9's hold counts
    /// from there, no earlier than the record.
    pub(super) silence_seen: Option<Instant>,
    /// When this operator last sent a promotion (answered or not).
    pub(super) promoted_at: Option<Instant>,
    /// The master health last announced with an Event.
    pub(super) announced: Option<Announced>,
    /// The generation whose owned objects were last applied, when, and the credentials read then
    /// (kept, so the every-second probes do not read the Secrets every time).
    pub(super) objects_applied: Option<(Option<i64>, Instant, Credentials)>,
    /// The stuck pods last announced with an Event, and why (pod -> reason).
    pub(super) pod_problems: HashMap<String, String>,
    /// Why a Secret the spec names (password, TLS) cannot be used, as last announced (reason,
    /// message).
    pub(super) secret_problem: Option<(&'static str, String)>,
    /// The resourceVersion of the replication as this operator last wrote it: a cached copy
    /// with another one may predate that write, and is read afresh.
    pub(super) written: Option<String>,
    /// When the last reconcile acted: later decisions need probes taken after it.
    pub(super) acted_at: Option<Instant>,
}

/// Owned objects and live settings are re-applied when the spec changes, when a watched owned
/// object (Service, ConfigMap) changes, and at least this often: the repair of drift nothing
/// watches (a deleted PodDisruptionBudget, Role, ...) and the re-read of the Secrets.
const REAPPLY_OBJECTS: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Announced {
    Subjective,
    Objective,
}

impl Context {
    /// Roles per instance, forgotten instances, and a completed failover.
    pub(super) fn record_metrics(
        &self,
        rr: &RedisReplication,
        previous: &crate::api::RedisReplicationStatus,
        status: &crate::api::RedisReplicationStatus,
    ) {
        let (ns, name) = Self::key(rr);
        for inst in &status.instances {
            self.metrics
                .instance_role(&ns, &name, &inst.name, inst.role);
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

    /// A connection to instance `pod` at `address`, bounded by the probe timeout.
    pub(super) async fn connect(
        &self,
        pod: &str,
        address: &Address,
        credentials: &Credentials,
    ) -> Result<InstanceClient, Error> {
        let address = self.redirects.get(address).unwrap_or(address);
        Ok(InstanceClient::connect(pod, address, credentials, self.probe_timeout).await?)
    }

    pub(super) fn key(rr: &RedisReplication) -> (String, String) {
        (rr.namespace().unwrap_or_default(), rr.name_any())
    }

    /// Runs `f` on what is remembered of `rr`.
    pub(super) fn remember<T>(&self, rr: &RedisReplication, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        f(memory.entry(Self::key(rr)).or_default())
    }

    /// The replication, read afresh when the cached copy may predate this operator's last write
    /// to it (its watch event not in yet): planning from it would redo what was just done.
    /// `None` when it is gone.
    pub(super) async fn current(
        &self,
        rr: &RedisReplication,
    ) -> Result<Option<RedisReplication>, Error> {
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
    pub(super) fn applied_credentials(&self, rr: &RedisReplication) -> Option<Credentials> {
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
    pub(super) fn spec_changed(&self, rr: &RedisReplication) -> bool {
        self.remember(rr, |m| {
            m.objects_applied
                .as_ref()
                .is_none_or(|(generation, _, _)| *generation != rr.metadata.generation)
        })
    }

    pub(super) fn objects_applied(&self, rr: &RedisReplication, credentials: Credentials) {
        self.remember(rr, |m| {
            m.objects_applied = Some((rr.metadata.generation, Instant::now(), credentials));
        });
    }

    pub(super) fn forget(&self, rr: &RedisReplication) {
        let key = Self::key(rr);
        self.monitor.forget(&key.0, &key.1);
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// How long the recorded master has not answered as master (unreachable, pod missing, or
    /// restarted and fenced): the start of a failure, for `downAfter` and `lastFailover`.
    pub(super) fn master_unreachable_for(
        &self,
        rr: &RedisReplication,
        recorded: &RecordedRoles,
        instances: &[plan::ObservedInstance],
    ) -> Option<Duration> {
        let master = recorded.current_master.as_ref()?;
        let inst = instances.iter().find(|i| &i.name == master);
        let answered = inst.is_some_and(|i| i.redis.as_ref().is_some_and(|r| r.is_master()));
        // Silent since its last reply: the probe that went unanswered was sent up to an interval
        // and a timeout after the master last spoke.
        let silent_for = inst.and_then(|i| i.silent_for);
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
            Some(since.elapsed().max(silent_for.unwrap_or_default()))
        })
    }

    /// How long the status has recorded the master silent, as far as this operator knows, and
    /// no promotion was sent since (that could have made a master of a silent instance).
    pub(super) fn silence_recorded_for(
        &self,
        rr: &RedisReplication,
        status: &crate::api::RedisReplicationStatus,
    ) -> Option<Duration> {
        self.remember(rr, |entry| {
            if status.master_silent_since.is_none() {
                entry.silence_seen = None;
                return None;
            }
            let recorded = entry
                .silence_seen
                .get_or_insert_with(Instant::now)
                .elapsed();
            Some(
                entry
                    .promoted_at
                    .map_or(recorded, |p| recorded.min(p.elapsed())),
            )
        })
    }

    /// This operator's write of `status` was just answered: a silence it records for the first
    /// time is in from now (the apiserver answers once the write is stored), not from the next
    /// reconcile's read of it.
    pub(super) fn status_written(
        &self,
        rr: &RedisReplication,
        previous: &crate::api::RedisReplicationStatus,
        status: &crate::api::RedisReplicationStatus,
    ) {
        if previous.master_silent_since.is_none() && status.master_silent_since.is_some() {
            self.remember(rr, |entry| entry.silence_seen = Some(Instant::now()));
        }
    }

    /// What connecting to `rr`'s instances takes: as the last reconcile read it, or read now.
    pub async fn instance_credentials(&self, rr: &RedisReplication) -> Result<Credentials, Error> {
        if let Some(known) = self.known_credentials(rr) {
            return Ok(known);
        }
        let ns = rr.namespace().ok_or(Error::NoNamespace)?;
        super::observe::read_credentials(self, rr, &ns).await
    }

    /// The credentials in use before a Secret became unusable, if any.
    pub(super) fn known_credentials(&self, rr: &RedisReplication) -> Option<Credentials> {
        self.remember(rr, |m| {
            m.objects_applied.as_ref().map(|(_, _, c)| c.clone())
        })
    }

    pub(super) fn secret_problem(&self, rr: &RedisReplication) -> Option<(&'static str, String)> {
        self.remember(rr, |m| m.secret_problem.clone())
    }

    /// The record of a failover or switchover this plan completes.
    pub(super) fn failover_record(
        input: &PlanInput,
        plan: &plan::Plan,
        acting_took: Duration,
    ) -> Option<FailoverRecord> {
        let intent = plan.intent.as_ref()?;
        let (kind, from, reason) = match plan.change.as_ref()? {
            Change::Failover { from, reason } => (FailoverKind::Failover, from, reason.clone()),
            Change::Switchover { from, reason } => (FailoverKind::Switchover, from, reason.clone()),
            _ => return None,
        };
        let duration = input.policy.master_unreachable_for.unwrap_or_default() + acting_took;
        Some(FailoverRecord {
            time: Time(Timestamp::now()),
            kind,
            from: from.clone(),
            to: intent.master.clone(),
            reason,
            duration_milliseconds: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
            epoch: intent.epoch,
        })
    }
}
