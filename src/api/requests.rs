//! The day-2 requests a user (or `kubectl vigil`) writes as annotations on a `RedisReplication`:
//! which instances are fenced, whether the set hibernates, and a rolling restart. Parsing is
//! pure and shared by the operator (which carries them out) and the plugin (which writes them),
//! so both read the same words.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Persistence, RedisReplicationSpec};

/// On a `RedisReplication`: a JSON list of the instances (pod names) that stop serving traffic
/// while keeping their pod and data, for investigation; `["*"]` fences every instance, `[]` none
/// (as CloudNativePG's `cnpg.io/fencedInstances`).
pub const FENCED_INSTANCES_ANNOTATION: &str = "redis.vigil.dev/fenced-instances";
/// On a `RedisReplication`: `on` stops the set (its pods go; claims, Secrets and the status that
/// names the master stay), `off` (or no annotation) wakes it with the same master and data.
pub const HIBERNATION_ANNOTATION: &str = "redis.vigil.dev/hibernation";
/// On a `RedisReplication`, any new value (a timestamp, as `kubectl rollout restart` writes)
/// restarts every instance through the rolling update: replicas first, the master last after a
/// switchover. On one instance pod: restarts that instance the same way.
pub const RESTART_ANNOTATION: &str = "redis.vigil.dev/restart";
/// On an instance pod: the value of the set's `RESTART_ANNOTATION` it was created under.
pub const RESTARTED_AT_ANNOTATION: &str = "redis.vigil.dev/restarted-at";

/// The wildcard of `FENCED_INSTANCES_ANNOTATION`.
pub const ALL_INSTANCES: &str = "*";

/// Which instances a fencing request names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fencing {
    #[default]
    None,
    All,
    Instances(BTreeSet<String>),
}

impl Fencing {
    /// Parses the annotation's value: a JSON list of pod names, or `["*"]`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let names: Vec<String> = serde_json::from_str(value).map_err(|e| {
            format!(
                "{FENCED_INSTANCES_ANNOTATION} must be a JSON list of instance names such as \
                 '[\"cache-1\"]' or '[\"*\"]': {e}"
            )
        })?;
        if names.iter().any(|n| n == ALL_INSTANCES) {
            return if names.len() == 1 {
                Ok(Self::All)
            } else {
                Err(format!(
                    "{FENCED_INSTANCES_ANNOTATION}: \"*\" fences every instance and cannot be \
                     listed with names"
                ))
            };
        }
        Ok(match names.is_empty() {
            true => Self::None,
            false => Self::Instances(names.into_iter().collect()),
        })
    }

    /// The annotation's value for this request; `None` for no fencing (the annotation goes).
    pub fn to_annotation(&self) -> Option<String> {
        let names: Vec<&str> = match self {
            Self::None => return None,
            Self::All => vec![ALL_INSTANCES],
            Self::Instances(names) => names.iter().map(String::as_str).collect(),
        };
        serde_json::to_string(&names).ok()
    }

    pub fn fences(&self, pod: &str) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Instances(names) => names.contains(pod),
        }
    }

    /// This request with `pod` (or every instance, for `None`) fenced too.
    pub fn with(self, pod: Option<&str>) -> Self {
        match (self, pod) {
            (_, None) | (Self::All, _) => Self::All,
            (Self::None, Some(pod)) => Self::Instances(BTreeSet::from([pod.to_string()])),
            (Self::Instances(mut names), Some(pod)) => {
                names.insert(pod.to_string());
                Self::Instances(names)
            }
        }
    }

    /// This request without `pod` (or without any fencing, for `None`). Unfencing one pod of
    /// `All` needs the other names, so the caller passes them.
    pub fn without(self, pod: Option<&str>, every_instance: &[String]) -> Self {
        let mut names = match (self, pod) {
            (_, None) | (Self::None, _) => return Self::None,
            (Self::All, Some(_)) => every_instance.iter().cloned().collect(),
            (Self::Instances(names), Some(_)) => names,
        };
        if let Some(pod) = pod {
            names.remove(pod);
        }
        match names.is_empty() {
            true => Self::None,
            false => Self::Instances(names),
        }
    }
}

/// Whether a hibernation request asks the set to stop.
pub fn parse_hibernation(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!(
            "{HIBERNATION_ANNOTATION} must be \"on\" or \"off\", not {other:?}"
        )),
    }
}

/// Why hibernating would lose the set's data (its pods are deleted), if it would: the operator
/// refuses the request for this reason, and the plugin before writing it.
pub fn hibernation_refusal(spec: &RedisReplicationSpec) -> Option<String> {
    if spec.storage.is_none() {
        return Some(
            "it has no spec.storage: its data lives in the pods and would be lost with them".into(),
        );
    }
    (spec.effective_persistence() == Persistence::None).then(|| {
        "spec.persistence is None: the instances write nothing to their claims, so the data \
         would be lost with the pods"
            .into()
    })
}

/// Where a hibernation stands, in the status.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum HibernationState {
    /// The pods are stopping: replicas first, then the master (which saves its data).
    Hibernating,
    /// No pod runs; claims, Secrets and the recorded master are kept.
    Hibernated,
    /// The pods are back and the recorded master is taking its role again.
    Waking,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_reads_lists_and_the_wildcard() {
        assert_eq!(Fencing::parse("[]"), Ok(Fencing::None));
        assert_eq!(Fencing::parse("[\"*\"]"), Ok(Fencing::All));
        let two = Fencing::parse("[\"cache-1\",\"cache-2\"]").expect("list");
        assert!(two.fences("cache-1") && two.fences("cache-2") && !two.fences("cache-0"));
        assert!(Fencing::parse("cache-1").is_err());
        assert!(Fencing::parse("[\"*\",\"cache-1\"]").is_err());
        assert!(Fencing::parse("{\"a\":1}").is_err());
    }

    #[test]
    fn fencing_round_trips_through_the_annotation() {
        for fencing in [
            Fencing::All,
            Fencing::Instances(BTreeSet::from(["cache-0".into(), "cache-2".into()])),
        ] {
            let value = fencing.to_annotation().expect("annotation");
            assert_eq!(Fencing::parse(&value), Ok(fencing));
        }
        assert_eq!(Fencing::None.to_annotation(), None);
    }

    #[test]
    fn fencing_adds_and_removes_instances() {
        let all: Vec<String> = ["cache-0", "cache-1", "cache-2"].map(String::from).into();
        let one = Fencing::None.with(Some("cache-1"));
        assert!(one.fences("cache-1") && !one.fences("cache-0"));
        assert_eq!(one.clone().with(None), Fencing::All);
        assert_eq!(one.without(Some("cache-1"), &all), Fencing::None);
        let two = Fencing::All.without(Some("cache-0"), &all);
        assert!(!two.fences("cache-0") && two.fences("cache-1") && two.fences("cache-2"));
        assert_eq!(Fencing::All.without(None, &all), Fencing::None);
    }

    #[test]
    fn hibernation_takes_on_and_off_only() {
        assert_eq!(parse_hibernation("on"), Ok(true));
        assert_eq!(parse_hibernation("off"), Ok(false));
        assert!(parse_hibernation("true").is_err());
    }
}
