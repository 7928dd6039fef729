//! The managed pods, from the one pod watch, indexed by replication: a reconcile reads the pods
//! of its set without scanning every pod the operator manages.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::labels::REPLICATION_LABEL;

/// (namespace, name) of a pod or of a replication.
type Key = (String, String);

/// Every managed pod, by the replication its label names. Kept as the watch stream says: a
/// relist replaces the whole index once it is complete, as kube's reflector does.
pub struct PodIndex {
    state: RwLock<State>,
    /// True once the first list is in: until then an empty index would look like every pod gone.
    listed: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    current: Pods,
    /// A relist in progress.
    relist: Option<Pods>,
}

#[derive(Default)]
struct Pods {
    /// Replication -> pod name -> pod.
    by_replication: HashMap<Key, BTreeMap<String, Arc<Pod>>>,
    /// Pod -> the replication it is filed under, to move or drop it.
    filed: HashMap<Key, Key>,
}

impl Pods {
    fn insert(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        self.remove(&key);
        let Some(replication) = pod.labels().get(REPLICATION_LABEL) else {
            return;
        };
        let set = (key.0.clone(), replication.clone());
        self.by_replication
            .entry(set.clone())
            .or_default()
            .insert(key.1.clone(), Arc::new(pod.clone()));
        self.filed.insert(key, set);
    }

    fn remove(&mut self, key: &Key) {
        let Some(set) = self.filed.remove(key) else {
            return;
        };
        if let Some(pods) = self.by_replication.get_mut(&set) {
            pods.remove(&key.1);
            if pods.is_empty() {
                self.by_replication.remove(&set);
            }
        }
    }
}

/// What the index keeps of a pod: its metadata and status, which is all a reconcile reads (the
/// spec it compares by the hash annotated at creation). Managed fields and the spec are most of
/// a pod's size, and the index holds every managed pod.
pub fn prune(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.spec = None;
}

fn pod_key(pod: &Pod) -> Key {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

impl Default for PodIndex {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            listed: watch::Sender::new(false),
        }
    }
}

impl PodIndex {
    /// Files one event of the pod watch.
    pub fn apply(&self, event: &watcher::Event<Pod>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(pod) => state.current.insert(pod),
            watcher::Event::Delete(pod) => state.current.remove(&pod_key(pod)),
            watcher::Event::Init => state.relist = Some(Pods::default()),
            watcher::Event::InitApply(pod) => state.relist.get_or_insert_default().insert(pod),
            watcher::Event::InitDone => {
                state.current = state.relist.take().unwrap_or_default();
                self.listed.send_replace(true);
            }
        }
    }

    /// Resolves once the first list is in.
    pub async fn wait_until_listed(&self) {
        let mut listed = self.listed.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = listed.wait_for(|l| *l).await;
    }

    /// The pods labelled as belonging to replication `namespace/name`, by name.
    pub fn of_replication(&self, namespace: &str, name: &str) -> Vec<Arc<Pod>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .current
            .by_replication
            .get(&(namespace.to_string(), name.to_string()))
            .map(|pods| pods.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, replication: Option<&str>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some(ns.into());
        pod.metadata.name = Some(name.into());
        if let Some(r) = replication {
            pod.labels_mut().insert(REPLICATION_LABEL.into(), r.into());
        }
        pod
    }

    fn names(index: &PodIndex, ns: &str, replication: &str) -> Vec<String> {
        index
            .of_replication(ns, replication)
            .iter()
            .map(|p| p.name_any())
            .collect()
    }

    #[test]
    fn pods_are_found_by_their_replication_only() {
        let index = PodIndex::default();
        index.apply(&watcher::Event::Init);
        for p in [
            pod("a", "cache-0", Some("cache")),
            pod("a", "cache-1", Some("cache")),
            pod("a", "queue-0", Some("queue")),
            pod("b", "cache-0", Some("cache")),
            pod("a", "stray", None),
        ] {
            index.apply(&watcher::Event::InitApply(p));
        }
        assert!(names(&index, "a", "cache").is_empty(), "not listed yet");
        index.apply(&watcher::Event::InitDone);
        assert_eq!(names(&index, "a", "cache"), ["cache-0", "cache-1"]);
        assert_eq!(names(&index, "a", "queue"), ["queue-0"]);
        assert_eq!(names(&index, "b", "cache"), ["cache-0"]);
        assert!(names(&index, "b", "queue").is_empty());

        // A pod relabelled to another set moves; a deleted one goes.
        index.apply(&watcher::Event::Apply(pod("a", "cache-1", Some("queue"))));
        index.apply(&watcher::Event::Delete(pod("a", "queue-0", Some("queue"))));
        assert_eq!(names(&index, "a", "cache"), ["cache-0"]);
        assert_eq!(names(&index, "a", "queue"), ["cache-1"]);

        // A relist replaces everything once complete: pods it does not list are gone.
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(pod(
            "a",
            "cache-2",
            Some("cache"),
        )));
        assert_eq!(names(&index, "a", "queue"), ["cache-1"], "until it is done");
        index.apply(&watcher::Event::InitDone);
        assert_eq!(names(&index, "a", "cache"), ["cache-2"]);
        assert!(names(&index, "a", "queue").is_empty());
        assert!(names(&index, "b", "cache").is_empty());
    }

    #[tokio::test]
    async fn waiting_ends_with_the_first_list() {
        let index = Arc::new(PodIndex::default());
        let waiter = tokio::spawn({
            let index = index.clone();
            async move { index.wait_until_listed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .expect("joined");
    }
}
