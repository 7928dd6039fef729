//! One container's life: resolve env and command, start the process, run probes and hooks,
//! notice exits, restart with backoff per the restart policy, and stop when told.
//!
//! The runner owns the process. It reports through a shared [`Record`] (read by the pod worker
//! to build status) and wakes the worker through a [`Notify`] whenever the record changes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use tokio::process::Child;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::action::{Action, Target};
use crate::command::{self, Program};
use crate::context::Context;
use crate::env::{self, EnvList};
use crate::layout;
use crate::probe::{self, Settings, Tracker};
use crate::process::{self, BindMount, Launch};
use crate::status::{Record, State, Termination};
use crate::volumes::MountTable;

/// Restart backoff: 1s doubling to a 10s cap. A real kubelet starts at 10s and caps at 5 minutes;
/// tests need crashes to recover in seconds, so the curve is shortened.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const INITIAL: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(10);
    /// A container that ran this long is considered healthy again: the backoff restarts small.
    const RESET_AFTER: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        Backoff {
            next: Self::INITIAL,
        }
    }

    /// Delay before the next attempt; `ran_for` is how long the last attempt ran.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= Self::RESET_AFTER {
            self.next = Self::INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// Whether the last delay was the first one of a series (the container had been healthy).
    pub fn is_first(&self) -> bool {
        self.next <= Self::INITIAL * 2
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Init,
    /// A restartable init container (`restartPolicy: Always`): runs alongside the main ones.
    Sidecar,
    Main,
}

/// Whether a container that exited with `exit_code` runs again.
pub fn should_restart(role: Role, pod_policy: &str, exit_code: i32) -> bool {
    match role {
        // Init containers run to completion; a failed one is retried unless the pod never restarts.
        Role::Init => exit_code != 0 && pod_policy != "Never",
        Role::Sidecar => true,
        Role::Main => match pod_policy {
            "Never" => false,
            "OnFailure" => exit_code != 0,
            _ => true,
        },
    }
}

/// A request to stop the container for good. A later request may move the deadline earlier
/// (a force delete during a graceful one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stop {
    /// After this, SIGKILL.
    pub deadline: Instant,
    /// Run the preStop hook first (pod deletion), or not (stand-in shutdown, force delete).
    pub pre_stop: bool,
}

/// How the runner ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exited and will not be restarted.
    Completed { exit_code: i32 },
    /// Stopped on request.
    Stopped,
}

/// Pod-level facts a runner needs.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    pub restart_policy: String,
    pub termination_grace: Duration,
}

/// The shared record plus the worker's wake-up.
#[derive(Clone)]
pub struct Reporter {
    pub record: Arc<Mutex<Record>>,
    pub dirty: Arc<Notify>,
}

impl Reporter {
    pub fn snapshot(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waiting for a (re)start; a previous termination becomes the last state.
    fn set_waiting(&self, reason: &str, message: String) {
        self.update(|r| {
            let waiting = State::Waiting {
                reason: reason.to_string(),
                message: Some(message),
            };
            if let State::Terminated(t) = std::mem::replace(&mut r.state, waiting) {
                r.last_state = Some(t);
            }
            r.ready = false;
        });
    }

    fn update(&self, f: impl FnOnce(&mut Record)) {
        {
            let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut record);
        }
        self.dirty.notify_one();
    }
}

/// A process start that could not happen, shown as the container's waiting reason.
struct StartError {
    reason: &'static str,
    message: String,
}

/// Everything resolved for one start of the process.
struct Prepared {
    program: Program,
    mounts: Vec<BindMount>,
    target: Target,
}

/// How a supervised run ended.
enum RunEnd {
    Exited(ExitStatus),
    /// Killed by us because a probe or hook failed; the pod policy decides about a restart.
    Killed(ExitStatus),
    Stopped(ExitStatus),
}

pub struct Runner {
    pub ctx: Arc<Context>,
    pub pod: Arc<PodInfo>,
    pub container: Container,
    pub role: Role,
    pub pod_rx: watch::Receiver<Arc<Pod>>,
    pub stop_rx: watch::Receiver<Option<Stop>>,
    pub mounts: Arc<MountTable>,
    pub reporter: Reporter,
}

impl Runner {
    fn name(&self) -> &str {
        &self.container.name
    }

    fn stop_request(&self) -> Option<Stop> {
        *self.stop_rx.borrow()
    }

    fn pid_file(&self) -> PathBuf {
        self.ctx
            .layout
            .pid_file(&self.pod.namespace, &self.pod.name, self.name())
    }

    pub async fn run(mut self) -> Outcome {
        let mut backoff = Backoff::new();
        let mut has_run = false;
        loop {
            if self.stop_request().is_some() {
                return self.stopped_while_idle();
            }
            let prepared = match self.prepare().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(pod = %self.pod.name, container = %self.name(), reason = e.reason, "{}", e.message);
                    self.reporter.set_waiting(e.reason, e.message);
                    if self
                        .sleep_unless_stopped(backoff.next_delay(Duration::ZERO))
                        .await
                    {
                        return self.stopped_while_idle();
                    }
                    continue;
                }
            };
            let log = match self.open_log() {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(container = %self.name(), error = %e, "cannot open log file");
                    if self
                        .sleep_unless_stopped(backoff.next_delay(Duration::ZERO))
                        .await
                    {
                        return self.stopped_while_idle();
                    }
                    continue;
                }
            };
            let restart_count = self.reporter.snapshot().restart_count + i32::from(has_run);
            log_line(
                &log,
                &format!(
                    "starting container {:?} (restartCount {restart_count}): {} {}",
                    self.name(),
                    prepared.program.path.display(),
                    prepared.program.args.join(" ")
                ),
            );
            let launch = Launch {
                program: &prepared.program,
                env: &prepared.target.env,
                working_dir: self
                    .container
                    .working_dir
                    .as_deref()
                    .map(std::path::Path::new),
            };
            let spawned =
                process::spawn_container(&launch, &prepared.mounts, &log).and_then(|child| {
                    child.id().map(|pid| (child, pid)).ok_or_else(|| {
                        std::io::Error::other("process exited before its PID was read")
                    })
                });
            let (mut child, pid) = match spawned {
                Ok(c) => c,
                Err(e) => {
                    let message =
                        format!("failed to start {}: {e}", prepared.program.path.display());
                    tracing::warn!(pod = %self.pod.name, container = %self.name(), "{message}");
                    log_line(&log, &message);
                    self.reporter.set_waiting("RunContainerError", message);
                    if self
                        .sleep_unless_stopped(backoff.next_delay(Duration::ZERO))
                        .await
                    {
                        return self.stopped_while_idle();
                    }
                    continue;
                }
            };

            let started_at = Timestamp::now();
            let started_instant = Instant::now();
            let container_id = format!("vigil://{pid}");
            if let Err(e) = layout::write_atomic(&self.pid_file(), pid.to_string().as_bytes()) {
                tracing::warn!(error = %e, "cannot write pid file");
            }
            tracing::info!(pod = %self.pod.name, namespace = %self.pod.namespace, container = %self.name(), pid, "container started");
            let image_id = format!("vigil-testkubelet://{}", prepared.program.path.display());
            let has_startup_probe = self.container.startup_probe.is_some();
            self.reporter.update(|r| {
                let previous = std::mem::replace(&mut r.state, State::Running { started_at });
                if has_run {
                    r.restart_count += 1;
                    if let State::Terminated(t) = previous {
                        r.last_state = Some(t);
                    }
                }
                r.container_id = Some(container_id.clone());
                r.image_id = image_id;
                r.started = !has_startup_probe;
                r.ready = false;
            });
            has_run = true;

            let end = self.supervise(&mut child, pid, &prepared.target).await;
            let status = match &end {
                RunEnd::Exited(s) | RunEnd::Killed(s) | RunEnd::Stopped(s) => *s,
            };
            // The leader is gone: end the rest of the container, as a runtime would.
            process::signal_group(pid, libc::SIGKILL);
            layout::remove_file(&self.pid_file());
            let (exit_code, signal) = process::exit_info(status);
            log_line(
                &log,
                &format!("container {:?} exited with code {exit_code}", self.name()),
            );
            tracing::info!(pod = %self.pod.name, namespace = %self.pod.namespace, container = %self.name(), exit_code, "container exited");
            let termination = Termination {
                exit_code,
                signal,
                reason: Termination::reason_for(exit_code).into(),
                message: None,
                started_at: Some(started_at),
                finished_at: Timestamp::now(),
                container_id: Some(container_id),
            };
            self.reporter.update(|r| {
                r.state = State::Terminated(termination);
                r.ready = false;
                r.started = false;
            });

            if matches!(end, RunEnd::Stopped(_)) {
                return Outcome::Stopped;
            }
            if !should_restart(self.role, &self.pod.restart_policy, exit_code) {
                return Outcome::Completed { exit_code };
            }
            let delay = backoff.next_delay(started_instant.elapsed());
            if !backoff.is_first() {
                let message = format!(
                    "back-off {}s restarting failed container={} pod={}_{}({})",
                    delay.as_secs(),
                    self.name(),
                    self.pod.name,
                    self.pod.namespace,
                    self.pod.uid
                );
                self.reporter.set_waiting("CrashLoopBackOff", message);
            }
            if self.sleep_unless_stopped(delay).await {
                return self.stopped_while_idle();
            }
        }
    }

    /// Stop requested while no process runs: a container waiting for a restart shows its last
    /// termination as its final state.
    fn stopped_while_idle(&self) -> Outcome {
        self.reporter.update(|r| {
            if matches!(r.state, State::Waiting { .. })
                && let Some(t) = r.last_state.take()
            {
                r.state = State::Terminated(t);
            }
            r.ready = false;
        });
        Outcome::Stopped
    }

    /// Sleeps; returns true if a stop was requested meanwhile.
    async fn sleep_unless_stopped(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return self.stop_request().is_some(),
                changed = self.stop_rx.changed() => {
                    if changed.is_err() || self.stop_request().is_some() {
                        return true;
                    }
                }
            }
        }
    }

    fn open_log(&self) -> std::io::Result<File> {
        let path = self
            .ctx
            .layout
            .log_file(&self.pod.namespace, &self.pod.name, self.name());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Resolves env, command and mounts against the current pod object and API data.
    async fn prepare(&self) -> Result<Prepared, StartError> {
        let pod = self.pod_rx.borrow().clone();
        let facts = self.ctx.pod_facts(Some(self.pod.ip));
        let config_error = |message: String| StartError {
            reason: "CreateContainerConfigError",
            message,
        };
        let sources = env::fetch_sources(&self.ctx.client, &self.pod.namespace, &self.container)
            .await
            .map_err(|e| config_error(e.to_string()))?;
        let service = env::service_env(&self.ctx.apiserver_host, self.ctx.apiserver_port);
        let kubelet_env = env::resolve(&pod, &facts, &self.container, &service, &sources)
            .map_err(|e| config_error(e.to_string()))?;
        let program = command::resolve(
            self.container.command.as_deref().unwrap_or_default(),
            self.container.args.as_deref().unwrap_or_default(),
            self.container.image.as_deref().unwrap_or_default(),
            &kubelet_env,
            &self.ctx.bin_dirs,
            &self.ctx.search_path,
        )
        .map_err(|e| StartError {
            reason: "CreateContainerError",
            message: e.to_string(),
        })?;
        let mounts = self
            .mounts
            .mounts_for(&self.container, &kubelet_env)
            .map_err(|message| StartError {
                reason: "CreateContainerConfigError",
                message,
            })?;
        let env = env::process_env(&kubelet_env, &self.pod.name, &self.ctx.bin_dirs);
        let mut static_env = EnvList::default();
        for var in self.container.env.iter().flatten() {
            if var.value_from.is_none() {
                static_env.set(&var.name, var.value.clone().unwrap_or_default());
            }
        }
        let target = Target {
            pod_ip: self.pod.ip.to_string(),
            ports: self.container.ports.clone().unwrap_or_default(),
            env,
            static_env,
            working_dir: self.container.working_dir.as_ref().map(PathBuf::from),
            bin_dirs: self.ctx.bin_dirs.clone(),
            search_path: self.ctx.search_path.clone(),
            pid: 0,
            user_agent: self.ctx.probe_user_agent.clone(),
        };
        Ok(Prepared {
            program,
            mounts,
            target,
        })
    }

    /// Watches a running process: its exit, its probes, postStart, and stop requests.
    async fn supervise(&mut self, child: &mut Child, pid: u32, target: &Target) -> RunEnd {
        let target = Arc::new(Target {
            pid,
            ..target.clone()
        });
        let started_at = Instant::now();
        let (started_tx, started_rx) = watch::channel(self.container.startup_probe.is_none());
        let (result_tx, mut results) = mpsc::channel::<(probe::Kind, Result<(), String>)>(8);
        let mut tasks = JoinSet::new();
        let mut trackers: Vec<(probe::Kind, Tracker, Settings)> = Vec::new();
        for (kind, spec) in [
            (probe::Kind::Startup, &self.container.startup_probe),
            (probe::Kind::Readiness, &self.container.readiness_probe),
            (probe::Kind::Liveness, &self.container.liveness_probe),
        ] {
            let Some(spec) = spec else { continue };
            let settings = Settings::from_probe(kind, spec);
            trackers.push((kind, Tracker::new(kind, &settings), settings.clone()));
            tasks.spawn(probe_loop(
                kind,
                settings,
                Action::from_probe(spec),
                target.clone(),
                started_at,
                started_rx.clone(),
                result_tx.clone(),
            ));
        }
        let has_readiness = self.container.readiness_probe.is_some();
        if started_rx.borrow().to_owned() && !has_readiness {
            self.reporter.update(|r| r.ready = true);
        }
        // postStart runs alongside the process; a failure kills the container. The hook task
        // sends a message only on failure; on success it just drops the sender.
        let (hook_tx, mut hook_rx) = oneshot::channel::<String>();
        let post_start = self
            .container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.clone());
        let mut hook_pending = post_start.is_some();
        if let Some(hook) = post_start {
            let target = target.clone();
            let timeout = self.pod.termination_grace.max(Duration::from_secs(30));
            tasks.spawn(async move {
                if let Err(e) = Action::from_hook(&hook).run(&target, timeout).await {
                    let _ = hook_tx.send(e);
                }
            });
        }
        drop(started_rx);

        let end = loop {
            tokio::select! {
                status = child.wait() => break RunEnd::Exited(status.unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL))),
                Some((kind, result)) = results.recv() => {
                    let Some((_, tracker, settings)) = trackers.iter_mut().find(|(k, _, _)| *k == kind) else {
                        continue;
                    };
                    if let Err(e) = &result {
                        tracing::info!(pod = %self.pod.name, container = %self.name(), probe = kind.name(), "probe failed: {e}");
                    }
                    let Some(now_ok) = tracker.observe(result.is_ok()) else { continue };
                    match (kind, now_ok) {
                        (probe::Kind::Startup, true) => {
                            let _ = started_tx.send(true);
                            self.reporter.update(|r| {
                                r.started = true;
                                if !has_readiness {
                                    r.ready = true;
                                }
                            });
                        }
                        (probe::Kind::Readiness, ready) => self.reporter.update(|r| r.ready = ready),
                        (probe::Kind::Startup | probe::Kind::Liveness, false) => {
                            tracing::warn!(pod = %self.pod.name, container = %self.name(), probe = kind.name(), "probe failed past its threshold: restarting container");
                            let grace = settings.termination_grace.unwrap_or(self.pod.termination_grace);
                            self.reporter.update(|r| r.ready = false);
                            break RunEnd::Killed(self.terminate(child, &target, grace, false).await);
                        }
                        (probe::Kind::Liveness, true) => {}
                    }
                }
                hook = &mut hook_rx, if hook_pending => {
                    hook_pending = false;
                    if let Ok(message) = hook {
                        tracing::warn!(pod = %self.pod.name, container = %self.name(), "postStart hook failed, killing container: {message}");
                        self.reporter.update(|r| r.ready = false);
                        break RunEnd::Killed(self.terminate(child, &target, self.pod.termination_grace, false).await);
                    }
                }
                changed = self.stop_rx.changed() => {
                    if changed.is_err() {
                        break RunEnd::Stopped(self.terminate(child, &target, Duration::ZERO, false).await);
                    }
                    if let Some(stop) = self.stop_request() {
                        self.reporter.update(|r| r.ready = false);
                        let grace = stop.deadline.saturating_duration_since(Instant::now());
                        break RunEnd::Stopped(self.terminate(child, &target, grace, stop.pre_stop).await);
                    }
                }
            }
        };
        tasks.abort_all();
        end
    }

    /// preStop (optionally), SIGTERM, wait up to `grace`, then SIGKILL the whole group. A newer
    /// stop request with an earlier deadline cuts the wait short.
    async fn terminate(
        &mut self,
        child: &mut Child,
        target: &Target,
        grace: Duration,
        pre_stop: bool,
    ) -> ExitStatus {
        let pid = target.pid;
        let mut deadline = Instant::now() + grace;
        let hook = self
            .container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref());
        if let (true, Some(hook)) = (pre_stop, hook) {
            let action = Action::from_hook(hook);
            tokio::select! {
                result = action.run(target, grace) => {
                    if let Err(e) = result {
                        tracing::warn!(container = %self.name(), "preStop hook failed: {e}");
                    }
                }
                status = child.wait() => return status.unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL)),
            }
        }
        process::signal_pid(pid, libc::SIGTERM);
        let mut killed = false;
        loop {
            tokio::select! {
                status = child.wait() => return status.unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL)),
                _ = tokio::time::sleep_until(deadline), if !killed => {
                    process::signal_group(pid, libc::SIGKILL);
                    killed = true;
                }
                changed = self.stop_rx.changed(), if !killed => {
                    match (changed, self.stop_request()) {
                        (Ok(()), Some(stop)) => deadline = deadline.min(stop.deadline),
                        _ => deadline = Instant::now(),
                    }
                }
            }
        }
    }
}

/// Runs one probe every period for as long as the container runs, reporting raw outcomes.
async fn probe_loop(
    kind: probe::Kind,
    settings: Settings,
    action: Action,
    target: Arc<Target>,
    started_at: Instant,
    mut started_rx: watch::Receiver<bool>,
    results: mpsc::Sender<(probe::Kind, Result<(), String>)>,
) {
    let mut ticker = tokio::time::interval(settings.period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // Once started, readiness and liveness probe at once instead of waiting a period.
            Ok(()) = started_rx.changed(), if kind != probe::Kind::Startup => {}
        }
        let started = *started_rx.borrow();
        match kind {
            probe::Kind::Startup if started => return,
            probe::Kind::Readiness | probe::Kind::Liveness if !started => continue,
            _ => {}
        }
        // Like the kubelet: probing starts on the first period tick after initialDelaySeconds.
        if started_at.elapsed() < settings.initial_delay {
            continue;
        }
        let result = action.run(&target, settings.timeout).await;
        if results.send((kind, result)).await.is_err() {
            return;
        }
    }
}

/// A marker line in the container log, so restarts are visible when reading it.
fn log_line(mut log: &File, text: &str) {
    let _ = writeln!(
        log,
        "----- vigil-testkubelet {}: {text} -----",
        Timestamp::now()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new();
        let quick = Duration::from_millis(100);
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay(quick).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(
            b.next_delay(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert!(b.is_first());
        b.next_delay(quick);
        assert!(!b.is_first());
    }

    #[test]
    fn restart_rules() {
        assert!(should_restart(Role::Main, "Always", 0));
        assert!(should_restart(Role::Main, "Always", 1));
        assert!(!should_restart(Role::Main, "OnFailure", 0));
        assert!(should_restart(Role::Main, "OnFailure", 137));
        assert!(!should_restart(Role::Main, "Never", 1));
        assert!(!should_restart(Role::Init, "Always", 0));
        assert!(should_restart(Role::Init, "Always", 1));
        assert!(should_restart(Role::Init, "OnFailure", 1));
        assert!(!should_restart(Role::Init, "Never", 1));
    }
}
