//! Pod status as the kubelet reports it, computed from what the stand-in knows about each
//! container. Pure: the worker feeds it records and writes the result as a strategic merge patch
//! of `pods/status`.
//!
//! Patch shape: `conditions` merge by `type` in a strategic merge patch, so we send only the
//! conditions we own (leaving readiness-gate and DisruptionTarget conditions of others alone),
//! each with explicit `null`s for fields that must disappear. `containerStatuses` and
//! `initContainerStatuses` are atomic lists and are replaced whole.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// How a container ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Termination {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub container_id: Option<String>,
}

impl Termination {
    /// Kubernetes' reasons: "Completed" for exit 0, "Error" otherwise.
    pub fn reason_for(exit_code: i32) -> &'static str {
        if exit_code == 0 { "Completed" } else { "Error" }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Termination),
}

/// What the stand-in knows about one container.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: State,
    pub last_state: Option<Termination>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    /// A restartable init container (native sidecar).
    pub sidecar: bool,
}

impl Record {
    pub fn new(name: &str, image: &str, waiting_reason: &str) -> Self {
        Record {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: None,
            state: State::Waiting {
                reason: waiting_reason.to_string(),
                message: None,
            },
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            sidecar: false,
        }
    }

    fn to_api(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: self.container_id.clone(),
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restart_count,
            state: Some(state_to_api(&self.state)),
            last_state: Some(
                self.last_state
                    .as_ref()
                    .map(|t| state_to_api(&State::Terminated(t.clone())))
                    .unwrap_or_default(),
            ),
            ..Default::default()
        }
    }
}

fn state_to_api(state: &State) -> ContainerState {
    match state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                signal: t.signal,
                reason: Some(t.reason.clone()),
                message: t.message.clone(),
                started_at: t.started_at.map(Time),
                finished_at: Some(Time(t.finished_at)),
                container_id: t.container_id.clone(),
            }),
            ..Default::default()
        },
    }
}

/// A condition we own, remembered so that `lastTransitionTime` only moves on a real transition.
#[derive(Clone, Debug, PartialEq)]
struct Condition {
    status: bool,
    reason: Option<String>,
    message: Option<String>,
    last_transition: Timestamp,
}

/// Our conditions across status computations.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    by_type: BTreeMap<String, Condition>,
}

impl Conditions {
    /// Starts from the conditions already on the pod (e.g. written by a previous run).
    pub fn from_pod(pod: &Pod) -> Self {
        let mut by_type = BTreeMap::new();
        for c in pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
        {
            if let Some(t) = &c.last_transition_time {
                by_type.insert(
                    c.type_.clone(),
                    Condition {
                        status: c.status == "True",
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                        last_transition: t.0,
                    },
                );
            }
        }
        Conditions { by_type }
    }

    fn set(
        &mut self,
        type_: &str,
        status: bool,
        reason: Option<&str>,
        message: Option<String>,
        now: Timestamp,
    ) -> Value {
        let last_transition = match self.by_type.get(type_) {
            Some(c) if c.status == status => c.last_transition,
            _ => now,
        };
        self.by_type.insert(
            type_.to_string(),
            Condition {
                status,
                reason: reason.map(str::to_string),
                message: message.clone(),
                last_transition,
            },
        );
        json!({
            "type": type_,
            "status": if status { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": Time(last_transition),
            "reason": reason,
            "message": message,
        })
    }
}

/// Everything the status depends on.
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: &'a str,
    /// IP allocated and volumes materialised.
    pub sandbox_ready: bool,
    pub init: &'a [Record],
    pub main: &'a [Record],
    /// All init containers completed successfully.
    pub initialized: bool,
    /// No container will run again (all finished for good, or the pod was deleted).
    pub finished: bool,
    pub start_time: Timestamp,
}

/// The pod phase, following the kubelet's rules.
pub fn phase(view: &PodView<'_>) -> &'static str {
    let policy = restart_policy(view.pod);
    let init_failed = view
        .init
        .iter()
        .any(|r| !r.sidecar && matches!(&r.state, State::Terminated(t) if t.exit_code != 0));
    if init_failed && (policy == "Never" || view.finished) {
        return "Failed";
    }
    if !view.initialized {
        return if view.finished { "Failed" } else { "Pending" };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for r in view.main {
        match &r.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            // A container waiting to be restarted has run before: it counts as stopped.
            State::Waiting { .. } if r.last_state.is_some() => {
                stopped += 1;
                if r.last_state.as_ref().is_some_and(|t| t.exit_code == 0) {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => waiting += 1,
        }
    }
    if view.finished {
        return if running == 0 && waiting == 0 && stopped == succeeded && stopped > 0 {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// QoS class: the apiserver sets it at creation and it never changes; computed only when absent.
fn qos_class(pod: &Pod) -> String {
    if let Some(q) = pod.status.as_ref().and_then(|s| s.qos_class.clone()) {
        return q;
    }
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort".into();
    };
    let containers: Vec<_> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let limits = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let requests = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        any |= !limits.is_empty() || !requests.is_empty();
        for res in ["cpu", "memory"] {
            let limit = limits.get(res);
            let request = requests.get(res).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
    .into()
}

/// The `pods/status` strategic merge patch body for the current state.
pub fn build(view: &PodView<'_>, conditions: &mut Conditions, now: Timestamp) -> Value {
    let pod = view.pod;
    let phase = phase(view);
    let terminal = phase == "Succeeded" || phase == "Failed";

    let mut conds = vec![
        conditions.set("PodScheduled", true, None, None, now),
        conditions.set(
            "PodReadyToStartContainers",
            view.sandbox_ready && !terminal,
            None,
            None,
            now,
        ),
    ];
    let incomplete: Vec<&str> = view
        .init
        .iter()
        .filter(|r| {
            if r.sidecar {
                !r.started
            } else {
                !matches!(&r.state, State::Terminated(t) if t.exit_code == 0)
            }
        })
        .map(|r| r.name.as_str())
        .collect();
    conds.push(if view.initialized {
        let reason = terminal.then_some("PodCompleted");
        conditions.set("Initialized", true, reason, None, now)
    } else {
        conditions.set(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
            now,
        )
    });

    // Sidecars count for readiness like main containers.
    let unready: Vec<&str> = view
        .init
        .iter()
        .filter(|r| r.sidecar)
        .chain(view.main)
        .filter(|r| !r.ready)
        .map(|r| r.name.as_str())
        .collect();
    let containers_ready = unready.is_empty() && view.initialized && !terminal;
    let (cr_reason, cr_message) = if terminal {
        (Some("PodCompleted"), None)
    } else if !view.initialized {
        (Some("ContainersNotInitialized"), None)
    } else if !unready.is_empty() {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    } else {
        (None, None)
    };
    conds.push(conditions.set(
        "ContainersReady",
        containers_ready,
        cr_reason,
        cr_message.clone(),
        now,
    ));

    let gate_problem = readiness_gate_problem(pod);
    let ready = containers_ready && gate_problem.is_none();
    let (r_reason, r_message) = match (&cr_reason, &gate_problem) {
        (Some(_), _) => (cr_reason, cr_message),
        (None, Some(problem)) => (Some("ReadinessGatesNotReady"), Some(problem.clone())),
        (None, None) => (None, None),
    };
    conds.push(conditions.set("Ready", ready, r_reason, r_message, now));

    // Apiservers that track pod generations expect the kubelet to echo the one it acted on.
    let generation = pod.metadata.generation;
    if let Some(g) = generation {
        for c in &mut conds {
            c["observedGeneration"] = json!(g);
        }
    }

    let ips: Vec<Value> = view
        .pod_ip
        .iter()
        .map(|ip| json!({ "ip": ip.to_string() }))
        .collect();
    let containers: Vec<ContainerStatus> = view.main.iter().map(Record::to_api).collect();
    let init: Vec<ContainerStatus> = view.init.iter().map(Record::to_api).collect();
    let mut status = json!({
        "phase": phase,
        "conditions": conds,
        "hostIP": view.host_ip,
        "hostIPs": [{ "ip": view.host_ip }],
        "podIP": view.pod_ip.map(|ip| ip.to_string()),
        "podIPs": if ips.is_empty() { Value::Null } else { Value::Array(ips) },
        "startTime": Time(view.start_time),
        "qosClass": qos_class(pod),
        "containerStatuses": containers,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    if let Some(g) = generation {
        status["observedGeneration"] = json!(g);
    }
    json!({ "status": status })
}

/// Why readiness gates keep the pod unready, if they do.
fn readiness_gate_problem(pod: &Pod) -> Option<String> {
    let gates = pod.spec.as_ref()?.readiness_gates.as_ref()?;
    let conditions: Vec<_> = pod
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .collect();
    for gate in gates {
        match conditions.iter().find(|c| c.type_ == gate.condition_type) {
            None => {
                return Some(format!(
                    "corresponding condition of pod readiness gate \"{}\" does not exist.",
                    gate.condition_type
                ));
            }
            Some(c) if c.status != "True" => {
                return Some(format!(
                    "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                    gate.condition_type, c.status
                ));
            }
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fieldpath::tests::sample_pod;
    use k8s_openapi::api::core::v1::{PodCondition, PodReadinessGate, PodStatus};

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn running(name: &str, ready: bool) -> Record {
        Record {
            state: State::Running { started_at: ts(0) },
            ready,
            started: true,
            container_id: Some("vigil://42".into()),
            ..Record::new(name, "redis:7", "ContainerCreating")
        }
    }

    fn terminated(name: &str, code: i32) -> Record {
        Record {
            state: State::Terminated(Termination {
                exit_code: code,
                signal: None,
                reason: Termination::reason_for(code).into(),
                message: None,
                started_at: Some(ts(0)),
                finished_at: ts(1),
                container_id: None,
            }),
            ..Record::new(name, "x", "")
        }
    }

    fn view<'a>(
        pod: &'a Pod,
        init: &'a [Record],
        main: &'a [Record],
        initialized: bool,
        finished: bool,
    ) -> PodView<'a> {
        PodView {
            pod,
            pod_ip: Some(Ipv4Addr::new(127, 0, 0, 10)),
            host_ip: "127.0.0.1",
            sandbox_ready: true,
            init,
            main,
            initialized,
            finished,
            start_time: ts(0),
        }
    }

    fn with_policy(policy: &str) -> Pod {
        let mut pod = sample_pod();
        if let Some(spec) = pod.spec.as_mut() {
            spec.restart_policy = Some(policy.into());
        }
        pod
    }

    /// Asserts the phase of a pod without init containers.
    #[track_caller]
    fn assert_phase(pod: &Pod, main: &[Record], initialized: bool, finished: bool, want: &str) {
        assert_eq!(phase(&view(pod, &[], main, initialized, finished)), want);
    }

    #[test]
    fn phases() {
        let always = with_policy("Always");
        let never = with_policy("Never");
        let on_failure = with_policy("OnFailure");
        let waiting = [Record::new("a", "x", "ContainerCreating")];
        assert_phase(&always, &waiting, true, false, "Pending");
        assert_phase(&always, &[running("a", false)], false, false, "Pending");
        assert_phase(&always, &[running("a", false)], true, false, "Running");
        assert_phase(&always, &[terminated("a", 0)], true, false, "Running");
        assert_phase(&never, &[terminated("a", 0)], true, false, "Succeeded");
        assert_phase(&never, &[terminated("a", 1)], true, false, "Failed");
        assert_phase(&on_failure, &[terminated("a", 1)], true, false, "Running");
        let mixed = [terminated("a", 0), running("b", true)];
        assert_phase(&on_failure, &mixed, true, false, "Running");
        // A crash-looping container (waiting with a last state) keeps the pod Running.
        let mut looping = Record::new("a", "x", "CrashLoopBackOff");
        looping.last_state = Some(match terminated("a", 1).state {
            State::Terminated(t) => t,
            _ => unreachable!(),
        });
        assert_phase(&always, &[looping], true, false, "Running");
        // Init failure with Never fails the pod.
        let init = [terminated("init", 1)];
        assert_eq!(
            phase(&view(&never, &init, &waiting, false, false)),
            "Failed"
        );
        // A deleted pod ends terminal.
        assert_phase(&always, &[terminated("a", 0)], true, true, "Succeeded");
        assert_phase(&always, &[terminated("a", 137)], true, true, "Failed");
    }

    fn condition<'a>(patch: &'a Value, type_: &str) -> &'a Value {
        patch["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == type_))
            .unwrap()
    }

    #[test]
    fn conditions_and_transition_times() {
        let pod = sample_pod();
        let mut conds = Conditions::default();
        let main = [running("redis", false)];
        let patch = build(&view(&pod, &[], &main, true, false), &mut conds, ts(10));
        assert_eq!(patch["status"]["phase"], "Running");
        assert_eq!(patch["status"]["podIP"], "127.0.0.10");
        assert_eq!(patch["status"]["podIPs"][0]["ip"], "127.0.0.10");
        assert_eq!(patch["status"]["qosClass"], "Burstable");
        let ready = condition(&patch, "Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ContainersNotReady");
        assert_eq!(ready["message"], "containers with unready status: [redis]");
        assert_eq!(ready["lastTransitionTime"], "2023-11-14T22:13:30Z");

        // Same status later: transition time unchanged.
        let patch = build(&view(&pod, &[], &main, true, false), &mut conds, ts(20));
        assert_eq!(
            condition(&patch, "Ready")["lastTransitionTime"],
            "2023-11-14T22:13:30Z"
        );

        // Becoming ready: new transition time, reason/message explicitly cleared.
        let main = [running("redis", true)];
        let patch = build(&view(&pod, &[], &main, true, false), &mut conds, ts(30));
        let ready = condition(&patch, "Ready");
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["lastTransitionTime"], "2023-11-14T22:13:50Z");
        assert!(ready["reason"].is_null() && ready.get("reason").is_some());
        let cs = &patch["status"]["containerStatuses"][0];
        assert_eq!(cs["ready"], true);
        assert_eq!(cs["containerID"], "vigil://42");
        assert!(cs["state"]["running"]["startedAt"].is_string());
    }

    #[test]
    fn echoes_generation_when_tracked() {
        let mut pod = sample_pod();
        let main = [running("redis", true)];
        let patch = build(
            &view(&pod, &[], &main, true, false),
            &mut Conditions::default(),
            ts(0),
        );
        assert!(patch["status"].get("observedGeneration").is_none());
        pod.metadata.generation = Some(3);
        let patch = build(
            &view(&pod, &[], &main, true, false),
            &mut Conditions::default(),
            ts(0),
        );
        assert_eq!(patch["status"]["observedGeneration"], 3);
        assert_eq!(condition(&patch, "Ready")["observedGeneration"], 3);
    }

    #[test]
    fn readiness_gates() {
        let mut pod = sample_pod();
        if let Some(spec) = pod.spec.as_mut() {
            spec.readiness_gates = Some(vec![PodReadinessGate {
                condition_type: "example.com/lb".into(),
            }]);
        }
        let main = [running("redis", true)];
        let mut conds = Conditions::default();
        let patch = build(&view(&pod, &[], &main, true, false), &mut conds, ts(0));
        assert_eq!(condition(&patch, "ContainersReady")["status"], "True");
        assert_eq!(condition(&patch, "Ready")["status"], "False");
        assert_eq!(
            condition(&patch, "Ready")["reason"],
            "ReadinessGatesNotReady"
        );

        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "example.com/lb".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let patch = build(&view(&pod, &[], &main, true, false), &mut conds, ts(1));
        assert_eq!(condition(&patch, "Ready")["status"], "True");
    }

    #[test]
    fn sidecars_count_when_started_and_for_readiness() {
        let pod = sample_pod();
        let mut sidecar = running("exporter", false);
        sidecar.sidecar = true;
        sidecar.started = true;
        let init = [terminated("setup", 0), sidecar.clone()];
        let main = [running("redis", true)];
        let mut conds = Conditions::default();
        let patch = build(&view(&pod, &init, &main, true, false), &mut conds, ts(0));
        assert_eq!(patch["status"]["phase"], "Running");
        assert_eq!(condition(&patch, "Initialized")["status"], "True");
        assert_eq!(condition(&patch, "ContainersReady")["status"], "False");
        assert_eq!(
            condition(&patch, "ContainersReady")["message"],
            "containers with unready status: [exporter]"
        );
        sidecar.ready = true;
        let init = [terminated("setup", 0), sidecar];
        let patch = build(&view(&pod, &init, &main, true, false), &mut conds, ts(1));
        assert_eq!(condition(&patch, "Ready")["status"], "True");
    }

    #[test]
    fn init_containers() {
        let pod = sample_pod();
        let init = [
            terminated("setup", 0),
            Record::new("second", "x", "PodInitializing"),
        ];
        let main = [Record::new("redis", "x", "PodInitializing")];
        let mut conds = Conditions::default();
        let patch = build(&view(&pod, &init, &main, false, false), &mut conds, ts(0));
        assert_eq!(patch["status"]["phase"], "Pending");
        let c = condition(&patch, "Initialized");
        assert_eq!(c["status"], "False");
        assert_eq!(c["message"], "containers with incomplete status: [second]");
        assert_eq!(
            patch["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
    }
}
