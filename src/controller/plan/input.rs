//! What the planner looks at: the instances as observed this round, the roles the status
//! records, the failover policy and the user's requests.

use std::time::Duration;

use super::Source;
use crate::api::requests::Fencing;
use crate::api::{HibernationState, Topology};
use crate::labels::RoleLabel;
use crate::redis::{Address, REDIS_PORT, ReplicationInfo};

/// One existing instance pod, as observed this round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedInstance {
    pub name: String,
    pub ordinal: u32,
    pub ip: Option<String>,
    /// The pod has a deletion timestamp: it is going.
    pub deleting: bool,
    /// The pod's Ready condition.
    pub pod_ready: bool,
    pub role_label: Option<RoleLabel>,
    /// `INFO replication`, or `None` when the instance could not be reached.
    pub redis: Option<ReplicationInfo>,
    /// Replica priority (annotation); lower is preferred, 0 never promoted (as Sentinel's).
    pub priority: u32,
    /// The pod was built from an older spec (image, resources, ...): only a new pod applies it.
    pub spec_outdated: bool,
    /// The instance runs an older `config` that could not be applied live.
    pub config_outdated: bool,
    /// Why the pod cannot run, when Kubernetes says it cannot (for status and Events).
    pub problem: Option<PodProblem>,
    /// The pod status says the Redis container is not running (terminated, or waiting to
    /// start again), and why.
    pub stopped: Option<String>,
    /// How long the monitor has seen this instance unchanged; `None` when it does not answer.
    /// A replica's offset moves with every heartbeat of a live master, so a still one has not
    /// heard from it (rule 9).
    pub still: Option<crate::isolation::Stillness>,
    /// How long since it last answered the monitor, when it does not answer now, and the
    /// replication offset of that last answer.
    pub silent_for: Option<Duration>,
    pub silent_at_offset: Option<i64>,
}

/// A pod that will not run until something changes: unschedulable, its image or configuration
/// unusable, or crash-looping.
#[derive(Clone, Debug, PartialEq)]
pub struct PodProblem {
    /// Kubernetes' reason (`Unschedulable`, `ImagePullBackOff`, `CrashLoopBackOff`, ...).
    pub reason: String,
    pub message: String,
}

impl ObservedInstance {
    /// The rolling update must replace this instance.
    pub fn outdated(&self) -> bool {
        self.spec_outdated || self.config_outdated
    }

    pub fn address(&self) -> Option<Address> {
        self.ip
            .as_ref()
            .map(|ip| Address::new(ip.clone(), REDIS_PORT))
    }
}

/// What the status says about roles, as the planner needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordedRoles {
    pub current_master: Option<String>,
    pub master_address: Option<String>,
    pub epoch: i64,
    pub target_master: Option<String>,
    /// The master to hand the role back to once it is refilled (failover disabled).
    pub hand_back_to: Option<String>,
    /// The instances fenced by request when the status was written.
    pub fenced: Vec<String>,
    pub hibernation: Option<HibernationState>,
    /// The status records a link to an external master (`status.replicaOf`): the set followed
    /// one, and has not been promoted since.
    pub following: bool,
}

impl RecordedRoles {
    /// The recorded master stopped serving because the user asked (it was fenced, or the set
    /// hibernated) and the request is lifted: it takes its role back unless another instance
    /// holds more data.
    pub fn master_resumes(&self, input: &PlanInput, name: &str) -> bool {
        let unfenced = self.fenced.iter().any(|f| f == name) && !input.fencing.fences(name);
        unfenced || self.waking(input)
    }

    /// The set hibernated and is asked to wake.
    pub fn waking(&self, input: &PlanInput) -> bool {
        self.hibernation.is_some() && !input.hibernate
    }
}

impl From<&crate::api::RedisReplicationStatus> for RecordedRoles {
    fn from(status: &crate::api::RedisReplicationStatus) -> Self {
        Self {
            current_master: status.current_master.clone(),
            master_address: status.master_address.clone(),
            epoch: status.epoch,
            target_master: status.target_master.clone(),
            hand_back_to: status.hand_back_to.clone(),
            fenced: status.fenced_instances.clone(),
            hibernation: status.hibernation,
            following: status.replica_of.is_some(),
        }
    }
}

/// The failover settings and the timing facts the operator measured.
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverPolicy {
    pub enabled: bool,
    pub down_after: Duration,
    /// How long the operator has been unable to reach the recorded master (or has not seen its
    /// pod); `None` when it answered the last probe.
    pub master_unreachable_for: Option<Duration>,
    /// How long the status has recorded the master silent (`masterSilentSince`), as this
    /// operator has seen it: the master's agent stopped taking the apiserver's word since.
    pub silence_recorded_for: Option<Duration>,
    /// Set while a previous failover is too recent for another one (rate limit).
    pub cooldown_remaining: Option<Duration>,
    /// The first master is chosen once every desired instance answers, or after this grace
    /// (some instance may never come up): so the choice compares all the data there is.
    pub bootstrap_grace_over: bool,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            down_after: Duration::from_secs(5),
            master_unreachable_for: None,
            silence_recorded_for: None,
            cooldown_remaining: None,
            bootstrap_grace_over: false,
        }
    }
}

/// Everything the planner looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInput {
    pub desired_instances: u32,
    pub recorded: RecordedRoles,
    pub instances: Vec<ObservedInstance>,
    pub policy: FailoverPolicy,
    pub topology: Topology,
    /// The instance the user asked to make master (annotation `redis.vigil.dev/switchover-to`).
    pub switchover_to: Option<String>,
    /// The instance the user forces to be master, discarding what others hold beyond it
    /// (annotation `redis.vigil.dev/force-master`).
    pub force_master: Option<String>,
    /// Instances fenced by request: read-only, following nobody, unlabelled, never promoted.
    pub fencing: Fencing,
    /// The set hibernates: its pods stop, replicas first.
    pub hibernate: bool,
    /// `spec.replicaOf`: the set follows this external master.
    pub following: Option<Source>,
}
