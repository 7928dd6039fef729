//! One pod on our node, from admission to deletion: sandbox (address + volumes), init
//! containers in order, main containers, status, graceful deletion and cleanup.
//!
//! The worker is an event loop. Container processes are owned by [`Runner`] tasks; the worker
//! decides which runners exist, tells them to stop, and turns their records into pod status.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::container::{Outcome, PodInfo, Reporter, Role, Runner, Stop};
use crate::context::Context;
use crate::layout;
use crate::status::{self, Conditions, PodView, Record, State, Termination};
use crate::volumes::{MountTable, PodVolumes};

/// What the manager can tell a worker besides pod updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The pod left the API without us finishing it (force delete): kill everything now.
    Gone,
    /// The stand-in is stopping: kill the processes, leave the API alone.
    Shutdown,
}

/// The manager's side of a worker.
pub struct WorkerHandle {
    pub pod_tx: watch::Sender<Arc<Pod>>,
    pub signal_tx: watch::Sender<Option<Signal>>,
    pub join: JoinHandle<()>,
}

/// Starts a worker for `pod`. `name_lock` serialises workers of pods with the same
/// namespace/name (a force-deleted pod's cleanup must finish before its successor with the same
/// name reuses the state directory).
pub fn spawn(
    ctx: Arc<Context>,
    pod: Arc<Pod>,
    name_lock: Arc<tokio::sync::Mutex<()>>,
) -> WorkerHandle {
    let (pod_tx, pod_rx) = watch::channel(pod.clone());
    let (signal_tx, signal_rx) = watch::channel(None);
    let join = tokio::spawn(async move {
        let _guard = name_lock.lock_owned().await;
        Worker::new(ctx, &pod, pod_rx, signal_rx).run().await;
    });
    WorkerHandle {
        pod_tx,
        signal_tx,
        join,
    }
}

const SANDBOX_RETRY: Duration = Duration::from_secs(2);
const VOLUME_REFRESH: Duration = Duration::from_secs(5);
const DELETE_RETRY: Duration = Duration::from_secs(10);

struct Worker {
    ctx: Arc<Context>,
    namespace: String,
    name: String,
    uid: String,
    pod_rx: watch::Receiver<Arc<Pod>>,
    signal_rx: watch::Receiver<Option<Signal>>,
    dirty: Arc<Notify>,

    ip: Option<Ipv4Addr>,
    volumes: PodVolumes,
    mounts: Option<Arc<MountTable>>,
    last_sandbox_try: Option<Instant>,
    last_refresh: Instant,

    init: Vec<Reporter>,
    main: Vec<Reporter>,
    /// Index of the next init container to run.
    init_next: usize,
    /// The init container being waited for (to complete, or for a sidecar to start).
    init_waiting: Option<usize>,
    initialized: bool,
    mains_started: bool,
    /// Main containers that exited for good.
    mains_done: usize,
    /// No container will be started any more (failed init container, crashed runner).
    giving_up: bool,
    runners: JoinSet<(Role, usize, Outcome)>,
    stop_tx: watch::Sender<Option<Stop>>,

    /// No container will run again.
    finished: bool,
    /// Deletion seen; runners were told to stop.
    terminating: bool,
    /// Pod deleted from the API by us; waiting for the watch to confirm.
    deleted_at: Option<Instant>,
    /// A pod that was already terminal when we adopted it: never touch its status.
    status_frozen: bool,

    conditions: Conditions,
    last_patch: Option<Value>,
    start_time: Timestamp,
}

impl Worker {
    fn new(
        ctx: Arc<Context>,
        pod: &Pod,
        pod_rx: watch::Receiver<Arc<Pod>>,
        signal_rx: watch::Receiver<Option<Signal>>,
    ) -> Self {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let dirty = Arc::new(Notify::new());
        let spec = pod.spec.clone().unwrap_or_default();
        let has_init = spec.init_containers.as_ref().is_some_and(|i| !i.is_empty());
        let reporter = |c: &Container, reason: &str| {
            let mut record = Record::new(&c.name, c.image.as_deref().unwrap_or_default(), reason);
            record.sidecar = is_sidecar(c);
            Reporter {
                record: Arc::new(Mutex::new(adopt(pod, record))),
                dirty: dirty.clone(),
            }
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| reporter(c, "PodInitializing"))
            .collect();
        let main_reason = if has_init {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let main = spec
            .containers
            .iter()
            .map(|c| reporter(c, main_reason))
            .collect();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let already_terminal = matches!(phase, Some("Succeeded" | "Failed"));
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        Worker {
            volumes: PodVolumes::new(ctx.client.clone(), ctx.layout.clone(), &namespace, &name),
            uid: pod.uid().unwrap_or_default(),
            ctx,
            namespace,
            name,
            pod_rx,
            signal_rx,
            dirty,
            ip: None,
            mounts: None,
            last_sandbox_try: None,
            last_refresh: Instant::now(),
            init,
            main,
            init_next: 0,
            init_waiting: None,
            initialized: !has_init,
            mains_started: false,
            mains_done: 0,
            giving_up: false,
            runners: JoinSet::new(),
            stop_tx: watch::channel(None).0,
            finished: already_terminal,
            terminating: false,
            deleted_at: None,
            status_frozen: already_terminal,
            conditions: Conditions::from_pod(pod),
            last_patch: None,
            start_time,
        }
    }

    fn pod(&self) -> Arc<Pod> {
        self.pod_rx.borrow().clone()
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    async fn run(mut self) {
        tracing::info!(pod = %self.name, namespace = %self.namespace, "pod admitted");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.advance().await;
            self.sync_status().await;
            tokio::select! {
                // Signals first: on shutdown nothing else matters.
                biased;
                changed = self.signal_rx.changed() => {
                    let signal = if changed.is_err() { Some(Signal::Shutdown) } else { *self.signal_rx.borrow() };
                    if let Some(signal) = signal {
                        self.stop_and_exit(signal).await;
                        return;
                    }
                }
                _ = self.dirty.notified() => {}
                changed = self.pod_rx.changed() => {
                    // The manager drops its sender only when it stops (a gone pod is signalled
                    // explicitly), so a closed channel means shutdown.
                    if changed.is_err() {
                        self.stop_and_exit(Signal::Shutdown).await;
                        return;
                    }
                }
                Some(joined) = self.runners.join_next() => self.on_runner_done(joined),
                _ = tick.tick() => self.periodic().await,
            }
        }
    }

    /// Moves the pod forward: deletion, sandbox, init containers, main containers.
    async fn advance(&mut self) {
        let pod = self.pod();
        if pod.metadata.deletion_timestamp.is_some() {
            self.begin_termination(&pod);
        }
        if self.terminating && self.runners.is_empty() {
            self.finished = true;
        }
        if self.finished {
            if !self.status_frozen && self.ip.is_some() {
                // Terminal pods give up their sandbox, as the kubelet tears it down.
                self.sync_status().await;
                self.release_sandbox();
            }
            if self.terminating && self.deleted_at.is_none() {
                self.finish_deletion().await;
            }
            return;
        }
        if self.terminating {
            return;
        }
        if self.mounts.is_none() {
            if self
                .last_sandbox_try
                .is_some_and(|t| t.elapsed() < SANDBOX_RETRY)
            {
                return;
            }
            self.last_sandbox_try = Some(Instant::now());
            if !self.setup_sandbox(&pod).await {
                return;
            }
        }
        // Nothing more will start (all main containers done for good under restartPolicy
        // Never/OnFailure, or a failed init container under Never): stop what still runs
        // (sidecars), then the pod is finished.
        if self.giving_up || (self.mains_started && self.mains_done == self.main.len()) {
            if self.runners.is_empty() {
                self.finished = true;
            } else if self.stop_tx.borrow().is_none() {
                self.stop_tx.send_replace(Some(Stop {
                    deadline: Instant::now() + self.termination_grace(&pod),
                    pre_stop: true,
                }));
            }
            return;
        }
        let no_spec = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&no_spec);
        let inits = spec.init_containers.as_deref().unwrap_or_default();
        while !self.initialized {
            // Wait for the current init container: a regular one until it completed (see
            // on_runner_done), a sidecar until it has started.
            if let Some(i) = self.init_waiting {
                if !(is_sidecar(&inits[i]) && self.init[i].snapshot().started) {
                    return;
                }
                self.init_waiting = None;
                self.init_next = i + 1;
            }
            match inits.get(self.init_next) {
                Some(c) => {
                    let role = if is_sidecar(c) {
                        Role::Sidecar
                    } else {
                        Role::Init
                    };
                    self.start_runner(role, self.init_next, c.clone());
                    self.init_waiting = Some(self.init_next);
                }
                None => self.initialized = true,
            }
        }
        if !self.mains_started {
            self.mains_started = true;
            for (i, c) in spec.containers.iter().enumerate() {
                self.start_runner(Role::Main, i, c.clone());
            }
        }
    }

    /// Allocates the address and materialises volumes; false (and a reason on the containers)
    /// while that is not possible.
    async fn setup_sandbox(&mut self, pod: &Pod) -> bool {
        if self.ip.is_none() {
            let preferred = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok());
            let host_network = pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            // hostNetwork pods share the node's address, as they would on a real node.
            self.ip = if host_network {
                self.ctx.host_ip.parse().ok()
            } else {
                self.ctx.ipam().allocate(&self.uid, preferred)
            };
            if let Some(ip) = self.ip
                && !host_network
                && let Err(e) = crate::ipam::attach(ip)
            {
                self.set_creating_message(&format!("cannot set up the pod address: {e}"));
                self.ctx.ipam().release(&self.uid);
                self.ip = None;
                return false;
            }
            match self.ip {
                Some(ip) => {
                    let file = self.ctx.layout.ip_file(&self.namespace, &self.name);
                    if let Err(e) = layout::write_atomic(&file, ip.to_string().as_bytes()) {
                        tracing::warn!(error = %e, "cannot write ip file");
                    }
                }
                None => {
                    self.set_creating_message("no free pod address left");
                    return false;
                }
            }
        }
        let facts = self.ctx.pod_facts(self.ip);
        match self.volumes.setup(pod, &facts).await {
            Ok(()) => {
                self.mounts = Some(Arc::new(self.volumes.table()));
                self.last_refresh = Instant::now();
                self.set_creating_message("");
                tracing::info!(pod = %self.name, namespace = %self.namespace, ip = ?self.ip, "sandbox ready");
                true
            }
            Err(e) => {
                tracing::info!(pod = %self.name, namespace = %self.namespace, "waiting for volumes: {e}");
                self.set_creating_message(&e.to_string());
                false
            }
        }
    }

    /// Puts (or clears) a message on containers still waiting to be created.
    fn set_creating_message(&self, message: &str) {
        for reporter in self.init.iter().chain(&self.main) {
            let mut record = reporter.record.lock().unwrap_or_else(|p| p.into_inner());
            if let State::Waiting { reason, message: m } = &mut record.state
                && (reason == "ContainerCreating" || reason == "PodInitializing")
            {
                *m = (!message.is_empty()).then(|| message.to_string());
            }
        }
        self.dirty.notify_one();
    }

    fn start_runner(&mut self, role: Role, index: usize, container: Container) {
        let (Some(ip), Some(mounts)) = (self.ip, self.mounts.clone()) else {
            return;
        };
        let pod = self.pod();
        let reporter = match role {
            Role::Init | Role::Sidecar => &self.init[index],
            Role::Main => &self.main[index],
        };
        let runner = Runner {
            ctx: self.ctx.clone(),
            pod: Arc::new(PodInfo {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                uid: self.uid.clone(),
                ip,
                restart_policy: status::restart_policy(&pod).to_string(),
                termination_grace: self.termination_grace(&pod),
            }),
            container,
            role,
            pod_rx: self.pod_rx.clone(),
            stop_rx: self.stop_tx.subscribe(),
            mounts,
            reporter: reporter.clone(),
        };
        self.runners
            .spawn(async move { (role, index, runner.run().await) });
    }

    fn on_runner_done(&mut self, joined: Result<(Role, usize, Outcome), tokio::task::JoinError>) {
        let (role, index, outcome) = match joined {
            Ok(done) => done,
            Err(e) => {
                // A panicking runner is a bug; treat its container as failed rather than hang.
                tracing::error!(pod = %self.name, error = %e, "container runner crashed");
                self.giving_up = true;
                return;
            }
        };
        match (role, outcome) {
            (_, Outcome::Stopped) => {}
            (Role::Init, Outcome::Completed { exit_code: 0 }) => {
                self.init_waiting = None;
                self.init_next = index + 1;
            }
            // Only reached with restartPolicy Never: a failed init container fails the pod.
            (Role::Init, Outcome::Completed { .. }) => self.giving_up = true,
            (Role::Main, Outcome::Completed { .. }) => self.mains_done += 1,
            // Sidecars always restart; they only end when stopped.
            (Role::Sidecar, Outcome::Completed { .. }) => {}
        }
    }

    async fn periodic(&mut self) {
        if self.mounts.is_some() && !self.finished && self.last_refresh.elapsed() >= VOLUME_REFRESH
        {
            let pod = self.pod();
            let facts = self.ctx.pod_facts(self.ip);
            self.volumes.refresh(&pod, &facts).await;
            self.last_refresh = Instant::now();
        }
        // The pod may be held by a finalizer; keep asking until the watch reports it gone.
        if self.deleted_at.is_some_and(|t| t.elapsed() >= DELETE_RETRY) {
            self.deleted_at = None;
        }
    }

    fn termination_grace(&self, pod: &Pod) -> Duration {
        let secs = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds);
        Duration::from_secs(secs.unwrap_or(30).max(0) as u64)
    }

    /// Deletion seen: stop every container with the pod's grace period, running preStop hooks.
    fn begin_termination(&mut self, pod: &Pod) {
        let grace = match pod.metadata.deletion_grace_period_seconds {
            Some(secs) => Duration::from_secs(secs.max(0) as u64),
            None => self.termination_grace(pod),
        };
        let deadline = Instant::now() + grace;
        let current = *self.stop_tx.borrow();
        // A second, shorter delete moves the deadline earlier; a longer one never extends it.
        if current.is_some_and(|s| s.deadline <= deadline) {
            return;
        }
        if !self.terminating {
            tracing::info!(pod = %self.name, namespace = %self.namespace, grace = grace.as_secs(), "pod deleted: stopping containers");
        }
        self.terminating = true;
        self.stop_tx.send_replace(Some(Stop {
            deadline,
            pre_stop: current.is_none(),
        }));
    }

    /// All containers stopped after a graceful delete: final status, cleanup, and the
    /// grace-0 delete with a UID precondition that completes the deletion (the kubelet's job).
    async fn finish_deletion(&mut self) {
        self.sync_status().await;
        self.release_sandbox();
        self.volumes.cleanup();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api().delete(&self.name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %self.name, namespace = %self.namespace, "pod deletion finished")
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "final delete failed; will retry")
            }
        }
        self.deleted_at = Some(Instant::now());
    }

    fn release_sandbox(&mut self) {
        if let Some(ip) = self.ip.take() {
            self.ctx.ipam().release(&self.uid);
            if ip.to_string() != self.ctx.host_ip {
                crate::ipam::detach(ip);
            }
            layout::remove_file(&self.ctx.layout.ip_file(&self.namespace, &self.name));
        }
    }

    /// Stops all containers and ends the worker.
    async fn stop_and_exit(&mut self, signal: Signal) {
        let grace = match signal {
            Signal::Gone => Duration::ZERO,
            Signal::Shutdown => self.ctx.shutdown_grace,
        };
        tracing::info!(pod = %self.name, namespace = %self.namespace, ?signal, "stopping pod");
        self.stop_tx.send_replace(Some(Stop {
            deadline: Instant::now() + grace,
            pre_stop: false,
        }));
        while self.runners.join_next().await.is_some() {}
        if signal == Signal::Gone {
            self.release_sandbox();
            self.volumes.cleanup();
        }
    }

    /// Writes status if it changed since the last successful write.
    async fn sync_status(&mut self) {
        if self.status_frozen || self.deleted_at.is_some() {
            return;
        }
        let pod = self.pod();
        let init: Vec<Record> = self.init.iter().map(Reporter::snapshot).collect();
        let main: Vec<Record> = self.main.iter().map(Reporter::snapshot).collect();
        let view = PodView {
            pod: &pod,
            pod_ip: self.ip.or_else(|| {
                // Keep reporting the address a finished pod had: pod IPs never change.
                pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
            }),
            host_ip: &self.ctx.host_ip,
            sandbox_ready: self.mounts.is_some() && self.ip.is_some(),
            init: &init,
            main: &main,
            initialized: self.initialized,
            finished: self.finished,
            start_time: self.start_time,
        };
        let patch = status::build(&view, &mut self.conditions, Timestamp::now());
        if self.last_patch.as_ref() == Some(&patch) {
            return;
        }
        let params = PatchParams::default();
        match self
            .api()
            .patch_status(&self.name, &params, &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => self.last_patch = Some(patch),
            Err(kube::Error::Api(e)) if e.code == 404 => self.last_patch = Some(patch),
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "status update failed; will retry")
            }
        }
    }
}

/// A container record continued from the status a previous stand-in run left: the process died
/// with that run (PDEATHSIG), so a container that was running counts as restarted.
fn adopt(pod: &Pod, mut record: Record) -> Record {
    let statuses = pod.status.iter().flat_map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
    });
    let Some(previous) = statuses.into_iter().find(|s| s.name == record.name) else {
        return record;
    };
    record.restart_count = previous.restart_count;
    let was_running = previous.state.as_ref().is_some_and(|s| s.running.is_some());
    if was_running {
        record.restart_count += 1;
        record.last_state = Some(Termination {
            exit_code: 137,
            signal: Some(libc::SIGKILL),
            reason: "Error".into(),
            message: Some("killed when vigil-testkubelet restarted".into()),
            started_at: previous
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.as_ref())
                .map(|t| t.0),
            finished_at: Timestamp::now(),
            container_id: previous.container_id.clone(),
        });
    }
    record
}

/// A restartable init container (native sidecar): it keeps running beside the main containers.
fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}
