//! Drift of the objects a replication owns: someone else changed or deleted one, so the next
//! reconcile re-applies them. The operator's own applies are not drift: re-applying after each
//! of them cost a new set four rounds of no-op applies (40 requests); with a thousand new sets
//! the node got about 30 pods a minute.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::resources::FIELD_MANAGER;

/// The replications whose owned objects have drifted, by namespace and name.
pub type Drifted = Arc<Mutex<HashSet<(String, String)>>>;

/// Records the replication that controls the object of `event` as drifted, unless the event is
/// the operator's own apply.
pub fn mark<K: ResourceExt>(drifted: &Drifted) -> impl Fn(&Event<K>) + use<K> {
    let drifted = drifted.clone();
    move |event: &Event<K>| {
        let obj = match event {
            Event::Delete(obj) => obj,
            Event::Apply(obj) | Event::InitApply(obj) if !last_written_by_us(obj) => obj,
            _ => return,
        };
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

/// Whether the latest write of `obj` was the operator's apply: every entry of its managed
/// fields with the latest time is ours. Times are whole seconds, so another writer in the same
/// second counts as drift (one re-apply too many rather than one too few).
fn last_written_by_us<K: ResourceExt>(obj: &K) -> bool {
    let fields = obj.managed_fields();
    let Some(latest) = fields.iter().filter_map(|f| f.time.as_ref()).max() else {
        return false;
    };
    fields
        .iter()
        .filter(|f| f.time.as_ref() == Some(latest))
        .all(|f| f.manager.as_deref() == Some(FIELD_MANAGER))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        ManagedFieldsEntry, OwnerReference, Time,
    };
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn service(writes: &[(&str, i64)]) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("cache-master".into());
        s.metadata.namespace = Some("ns".into());
        s.metadata.owner_references = Some(vec![OwnerReference {
            kind: "RedisReplication".into(),
            name: "cache".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        s.metadata.managed_fields = Some(
            writes
                .iter()
                .map(|(manager, second)| ManagedFieldsEntry {
                    manager: Some(manager.to_string()),
                    time: Timestamp::from_second(*second).ok().map(Time),
                    ..ManagedFieldsEntry::default()
                })
                .collect(),
        );
        s
    }

    fn drifted_after(event: Event<Service>) -> bool {
        let drifted = Drifted::default();
        mark(&drifted)(&event);
        drifted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&("ns".to_string(), "cache".to_string()))
    }

    #[test]
    fn the_operators_own_apply_is_not_drift() {
        let ours = service(&[(FIELD_MANAGER, 100)]);
        assert!(!drifted_after(Event::Apply(ours.clone())));
        assert!(!drifted_after(Event::InitApply(ours)));
    }

    #[test]
    fn an_edit_by_someone_else_after_ours_is_drift() {
        assert!(drifted_after(Event::Apply(service(&[
            (FIELD_MANAGER, 100),
            ("kubectl-edit", 160),
        ]))));
        // The same second as ours: counted as drift.
        assert!(drifted_after(Event::Apply(service(&[
            (FIELD_MANAGER, 100),
            ("kubectl-edit", 100),
        ]))));
        // Ours after theirs: our apply put it back.
        assert!(!drifted_after(Event::Apply(service(&[
            ("kubectl-edit", 100),
            (FIELD_MANAGER, 160),
        ]))));
    }

    #[test]
    fn a_deletion_or_an_object_of_unknown_history_is_drift() {
        assert!(drifted_after(Event::Delete(service(&[(
            FIELD_MANAGER,
            100
        )]))));
        assert!(drifted_after(Event::Apply(service(&[]))));
    }
}
