//! The user's day-2 requests (annotations of `api::requests`) as the planner takes them, and
//! why one cannot be carried out. Pure. A request that cannot be read changes nothing: a typo
//! in the fencing list keeps the instances fenced that were, rather than unfencing them all.

use crate::api::requests::{
    FENCED_INSTANCES_ANNOTATION, Fencing, HIBERNATION_ANNOTATION, hibernation_refusal,
    parse_hibernation,
};
use crate::api::{HibernationState, RedisReplicationSpec, RedisReplicationStatus};

/// What the planner is asked to do beyond the spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Requests {
    pub fencing: Fencing,
    /// Stop every pod, keeping claims and the status.
    pub hibernate: bool,
    /// Why an annotation is not carried out (for the `RequestsAccepted` condition).
    pub problems: Vec<Problem>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// `InvalidAnnotation` or `HibernationRefused`.
    pub reason: &'static str,
    pub message: String,
}

/// Reads the requests from the annotations' values, falling back on what the status says was
/// in force when one cannot be read.
pub fn read(
    fenced: Option<&str>,
    hibernation: Option<&str>,
    spec: &RedisReplicationSpec,
    previous: &RedisReplicationStatus,
) -> Requests {
    let mut problems = Vec::new();
    let mut invalid = |message: String| {
        problems.push(Problem {
            reason: "InvalidAnnotation",
            message,
        })
    };
    let fencing = match fenced.map(Fencing::parse) {
        None => Fencing::None,
        Some(Ok(fencing)) => fencing,
        Some(Err(e)) => {
            invalid(format!("{e}; the fenced instances stay as they were"));
            match previous.fenced_instances.is_empty() {
                true => Fencing::None,
                false => Fencing::Instances(previous.fenced_instances.iter().cloned().collect()),
            }
        }
    };
    let was_hibernating = matches!(
        previous.hibernation,
        Some(HibernationState::Hibernating | HibernationState::Hibernated)
    );
    let asked = match hibernation.map(parse_hibernation) {
        None => false,
        Some(Ok(on)) => on,
        Some(Err(e)) => {
            invalid(format!("{e}; the set stays as it is"));
            was_hibernating
        }
    };
    let refusal = hibernation_refusal(spec);
    let hibernate = match (&refusal, asked) {
        (Some(why), true) if !was_hibernating => {
            problems.push(Problem {
                reason: "HibernationRefused",
                message: format!("{HIBERNATION_ANNOTATION}=on is refused: {why}"),
            });
            false
        }
        _ => asked,
    };
    if fencing != Fencing::None && hibernate {
        problems.push(Problem {
            reason: "InvalidAnnotation",
            message: format!(
                "{FENCED_INSTANCES_ANNOTATION} has no effect while the set hibernates: no pod runs"
            ),
        });
    }
    Requests {
        fencing,
        hibernate,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Persistence, StorageSpec};

    fn spec(storage: bool, persistence: Option<Persistence>) -> RedisReplicationSpec {
        let mut spec: RedisReplicationSpec =
            serde_json::from_value(serde_json::json!({"instances": 3})).expect("spec");
        spec.storage = storage.then(|| StorageSpec {
            size: "1Gi".into(),
            storage_class_name: None,
            retention: Default::default(),
        });
        spec.persistence = persistence;
        spec
    }

    #[test]
    fn no_annotations_ask_for_nothing() {
        let r = read(None, None, &spec(true, None), &Default::default());
        assert_eq!(r, Requests::default());
    }

    #[test]
    fn a_bad_fencing_list_keeps_what_was_fenced() {
        let previous = RedisReplicationStatus {
            fenced_instances: vec!["cache-1".into()],
            ..Default::default()
        };
        let r = read(Some("cache-2"), None, &spec(true, None), &previous);
        assert!(r.fencing.fences("cache-1") && !r.fencing.fences("cache-2"));
        assert_eq!(r.problems[0].reason, "InvalidAnnotation");
    }

    #[test]
    fn hibernation_is_refused_where_it_would_lose_data() {
        for s in [spec(false, None), spec(true, Some(Persistence::None))] {
            let r = read(None, Some("on"), &s, &Default::default());
            assert!(!r.hibernate);
            assert_eq!(r.problems[0].reason, "HibernationRefused");
        }
        let r = read(
            None,
            Some("on"),
            &spec(true, Some(Persistence::Aof)),
            &Default::default(),
        );
        assert!(r.hibernate && r.problems.is_empty());
    }

    #[test]
    fn a_bad_hibernation_value_keeps_the_set_as_it_is() {
        let hibernated = RedisReplicationStatus {
            hibernation: Some(HibernationState::Hibernated),
            ..Default::default()
        };
        let r = read(None, Some("yes"), &spec(true, None), &hibernated);
        assert!(r.hibernate);
        let r = read(None, Some("yes"), &spec(true, None), &Default::default());
        assert!(!r.hibernate);
        assert_eq!(r.problems.len(), 1);
    }
}
