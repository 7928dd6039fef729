//! Events on a replication. kube's `Recorder` folds every repeat of one (type, reason, action,
//! object, related object) into a series that keeps the first note, so the second
//! `ReplicaPromoted` would still name the first master. Here a repeat joins a series only when
//! its note is the same too; any other note is a new Event that says what happened this time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::Context;
use crate::api::RedisReplication;

/// How long a series stays open for repeats (as kube's recorder).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// Who reports the Events.
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<HashMap<Key, Series>>,
}

/// What makes two Events the same occurrence repeated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    type_: &'static str,
    reason: String,
    action: String,
    regarding: (Option<String>, Option<String>, Option<String>),
    related: Option<String>,
    note: String,
}

struct Series {
    name: String,
    count: i32,
    last: Instant,
}

/// One Event to publish.
struct Occurrence<'a> {
    type_: EventType,
    reason: &'a str,
    action: &'a str,
    note: String,
    related: Option<ObjectReference>,
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            series: Mutex::default(),
        }
    }

    async fn publish(
        &self,
        regarding: &ObjectReference,
        ev: Occurrence<'_>,
    ) -> Result<(), kube::Error> {
        let type_ = match ev.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = Key {
            type_,
            reason: ev.reason.to_string(),
            action: ev.action.to_string(),
            regarding: (
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            related: ev.related.as_ref().and_then(|r| r.name.clone()),
            note: ev.note.clone(),
        };
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = Timestamp::now();
        let repeat = {
            let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
            series.retain(|_, s| s.last.elapsed() < SERIES_TTL);
            series.get_mut(&key).map(|s| {
                s.count += 1;
                s.last = Instant::now();
                (s.name.clone(), s.count)
            })
        };
        if let Some((name, count)) = repeat {
            let patch =
                json!({"series": EventSeries { count, last_observed_time: MicroTime(now) }});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            return Ok(());
        }
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            action: Some(ev.action.to_string()),
            reason: Some(ev.reason.to_string()),
            note: Some(ev.note),
            type_: Some(type_.to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.related,
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series.insert(
            key,
            Series {
                name: created.name_any(),
                count: 1,
                last: Instant::now(),
            },
        );
        Ok(())
    }
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
        self.emit(rr, type_, reason, action, note, None).await;
    }

    /// An Event on the replication about one of its pods (named as the related object).
    pub async fn pod_event(
        &self,
        rr: &RedisReplication,
        type_: EventType,
        pod: &str,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let related = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: rr.namespace(),
            ..ObjectReference::default()
        };
        self.emit(rr, type_, reason, action, note, Some(related))
            .await;
    }

    /// An Event on any object of ours (a RedisBackup, a RedisScheduledBackup, ...).
    pub async fn event_on<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.emit_on(&obj.object_ref(&()), type_, reason, action, note, None)
            .await;
    }

    async fn emit(
        &self,
        rr: &RedisReplication,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        self.emit_on(&rr.object_ref(&()), type_, reason, action, note, related)
            .await;
    }

    async fn emit_on(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        let occurrence = Occurrence {
            type_,
            reason,
            action,
            note,
            related,
        };
        if let Err(e) = self.events.publish(regarding, occurrence).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}
