//! Watches all pods and routes them: unscheduled ones to the scheduler, ours to their workers.
//!
//! Workers are keyed by pod UID. A pod that disappears from the API while its worker still runs
//! (a force delete, or one we missed while the watch was down and notice on relist) gets the
//! `Gone` signal: its processes are killed at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::scheduler;
use crate::worker::{self, Signal, WorkerHandle};

pub struct Manager {
    ctx: Arc<Context>,
    node_labels: BTreeMap<String, String>,
    workers: HashMap<String, WorkerHandle>,
    /// Workers of pods that are gone, still killing their processes.
    departing: Vec<tokio::task::JoinHandle<()>>,
    /// namespace/name -> lock held by the worker of the pod currently using that name.
    name_locks: HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>,
    /// Pods with a bind request in flight, so a burst of events binds once.
    binding: Arc<Mutex<HashSet<String>>>,
    /// Objects of the relist in progress (between Init and InitDone).
    relist: Option<Vec<Pod>>,
    first_relist_done: bool,
}

impl Manager {
    pub fn new(ctx: Arc<Context>, node_labels: BTreeMap<String, String>) -> Self {
        Manager {
            ctx,
            node_labels,
            workers: HashMap::new(),
            departing: Vec::new(),
            name_locks: HashMap::new(),
            binding: Arc::new(Mutex::new(HashSet::new())),
            relist: None,
            first_relist_done: false,
        }
    }

    /// Runs until `shutdown` completes, then stops every pod's processes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let api: Api<Pod> = Api::all(self.ctx.client.clone());
        // The watcher relists after errors and apiserver restarts; backoff keeps that polite.
        let events = watcher(api, watcher::Config::default()).default_backoff();
        tokio::pin!(events);
        tokio::pin!(shutdown);
        let mut reap = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                event = events.next() => match event {
                    Some(Ok(event)) => self.on_event(event),
                    Some(Err(e)) => tracing::warn!(error = %e, "pod watch error; retrying"),
                    None => break,
                },
                _ = reap.tick() => self.reap(),
            }
        }
        self.shutdown().await;
    }

    fn on_event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.relist = Some(Vec::new()),
            watcher::Event::InitApply(pod) => match self.relist.as_mut() {
                Some(buffer) => buffer.push(pod),
                None => self.on_pod(pod),
            },
            watcher::Event::InitDone => {
                let pods = self.relist.take().unwrap_or_default();
                self.on_relist(pods);
            }
            watcher::Event::Apply(pod) => self.on_pod(pod),
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.uid() {
                    self.on_gone(&uid);
                }
            }
        }
    }

    fn is_ours(&self, pod: &Pod) -> bool {
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(self.ctx.node_name.as_str())
    }

    /// A full list: pods missing from it are gone. Addresses of existing pods are reserved
    /// before any new pod gets one, so that after a stand-in restart nobody steals an address.
    fn on_relist(&mut self, pods: Vec<Pod>) {
        let live: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|uid| !live.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.on_gone(&uid);
        }
        {
            let mut ipam = self.ctx.ipam();
            for pod in pods.iter().filter(|p| self.is_ours(p)) {
                let ip = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|ip| ip.parse().ok());
                let terminal = matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                );
                if let (Some(ip), Some(uid), false) = (ip, pod.uid(), terminal) {
                    ipam.reserve(&uid, ip);
                }
            }
        }
        if !self.first_relist_done {
            self.first_relist_done = true;
            self.clean_orphan_dirs(&pods);
        }
        for pod in pods {
            self.on_pod(pod);
        }
    }

    fn on_pod(&mut self, pod: Pod) {
        let Some(uid) = pod.uid() else { return };
        if scheduler::wants_scheduling(&pod) {
            self.bind(pod);
            return;
        }
        if !self.is_ours(&pod) {
            return;
        }
        if let Some(handle) = self.workers.get(&uid) {
            handle.pod_tx.send_replace(Arc::new(pod));
            return;
        }
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        let lock = self.name_locks.entry(key).or_default().clone();
        let handle = worker::spawn(self.ctx.clone(), Arc::new(pod), lock);
        self.workers.insert(uid, handle);
    }

    fn bind(&self, pod: Pod) {
        let Some(uid) = pod.uid() else { return };
        {
            let mut inflight = self.binding.lock().unwrap_or_else(|p| p.into_inner());
            if !inflight.insert(uid.clone()) {
                return;
            }
        }
        let ctx = self.ctx.clone();
        let labels = self.node_labels.clone();
        let inflight = self.binding.clone();
        tokio::spawn(async move {
            if let Err(e) = scheduler::schedule(&ctx.client, &pod, &ctx.node_name, &labels).await {
                tracing::warn!(pod = %pod.name_any(), error = %e, "binding failed; will retry on the next pod event");
            }
            inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uid);
        });
    }

    fn on_gone(&mut self, uid: &str) {
        if let Some(handle) = self.workers.remove(uid) {
            // The worker finishes on its own; its name lock keeps a successor waiting meanwhile.
            handle.signal_tx.send_replace(Some(Signal::Gone));
            self.departing.push(handle.join);
        }
    }

    /// Forgets finished workers and unused name locks.
    fn reap(&mut self) {
        self.workers.retain(|_, h| !h.join.is_finished());
        self.departing.retain(|j| !j.is_finished());
        self.name_locks
            .retain(|_, lock| Arc::strong_count(lock) > 1);
    }

    /// Leftovers of pods that no longer exist (the stand-in was down when they went away):
    /// volumes, address and pid files go; logs stay for post-mortems.
    fn clean_orphan_dirs(&self, pods: &[Pod]) {
        let live: HashSet<(String, String)> = pods
            .iter()
            .filter(|p| self.is_ours(p))
            .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
            .collect();
        let root = self.ctx.layout.pods_root();
        let Ok(namespaces) = std::fs::read_dir(&root) else {
            return;
        };
        for ns in namespaces.flatten() {
            let Ok(pods) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for pod in pods.flatten() {
                let key = (
                    ns.file_name().to_string_lossy().into_owned(),
                    pod.file_name().to_string_lossy().into_owned(),
                );
                if live.contains(&key) {
                    continue;
                }
                let _ = std::fs::remove_dir_all(self.ctx.layout.volumes_dir(&key.0, &key.1));
                crate::layout::remove_file(&self.ctx.layout.ip_file(&key.0, &key.1));
            }
        }
    }

    async fn shutdown(&mut self) {
        tracing::info!(pods = self.workers.len(), "stopping all pods");
        for handle in self.workers.values() {
            handle.signal_tx.send_replace(Some(Signal::Shutdown));
        }
        // Keep the handles (and so the channels) alive until every worker is done.
        let mut handles: Vec<WorkerHandle> = self.workers.drain().map(|(_, h)| h).collect();
        let joins = handles
            .iter_mut()
            .map(|h| &mut h.join)
            .chain(self.departing.iter_mut());
        futures::future::join_all(joins).await;
    }
}
