//! The status of the user's day-2 requests: who is fenced, where a hibernation stands, and
//! why an annotation is not carried out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::{StatusInput, set_condition};
use crate::api::HibernationState;
use crate::controller::plan::{MasterState, Plan};

/// True while any instance is fenced by request.
pub const FENCED: &str = "Fenced";
/// True while the set hibernates (its pods stopping, or stopped).
pub const HIBERNATED: &str = "Hibernated";
/// False while an annotation cannot be carried out, with why.
pub const REQUESTS_ACCEPTED: &str = "RequestsAccepted";

/// The instances fenced by request, in ordinal order.
pub(super) fn fenced_instances(input: &StatusInput<'_>) -> Vec<String> {
    if input.requests.hibernate {
        return Vec::new();
    }
    input
        .instances
        .iter()
        .filter(|i| input.requests.fencing.fences(&i.name))
        .map(|i| i.name.clone())
        .collect()
}

pub(super) fn hibernation(input: &StatusInput<'_>, plan: &Plan) -> Option<HibernationState> {
    match &plan.master {
        MasterState::Hibernating if input.instances.is_empty() => {
            Some(HibernationState::Hibernated)
        }
        MasterState::Hibernating => Some(HibernationState::Hibernating),
        // Awake once the recorded master acts again.
        MasterState::Acting { .. } => None,
        _ => input.previous.hibernation.map(|_| HibernationState::Waking),
    }
}

pub(super) fn set_conditions(
    conditions: &mut Vec<Condition>,
    input: &StatusInput<'_>,
    fenced: &[String],
    hibernation: Option<HibernationState>,
) {
    match fenced {
        [] => conditions.retain(|c| c.type_ != FENCED),
        names => set_condition(
            conditions,
            FENCED,
            true,
            "FencedByRequest",
            &format!(
                "{} fenced by request: read-only, out of the Services, never promoted{}",
                names.join(", "),
                match input.recorded_master_fenced(fenced) {
                    true => "; the master is fenced, so the set takes no writes",
                    false => "",
                }
            ),
            input,
        ),
    }
    match hibernation {
        None => conditions.retain(|c| c.type_ != HIBERNATED),
        Some(state) => {
            let (reason, message) = match state {
                HibernationState::Hibernating => (
                    "Hibernating",
                    format!("{} pods still stopping", input.instances.len()),
                ),
                HibernationState::Hibernated => (
                    "Hibernated",
                    "no pod runs; claims, Secrets and the recorded master are kept".into(),
                ),
                HibernationState::Waking => (
                    "Waking",
                    "the pods are back; waiting for the recorded master to take its role".into(),
                ),
            };
            let on = state != HibernationState::Waking;
            set_condition(conditions, HIBERNATED, on, reason, &message, input);
        }
    }
    match input.requests.problems.first() {
        None => conditions.retain(|c| c.type_ != REQUESTS_ACCEPTED),
        Some(first) => {
            let message = input
                .requests
                .problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            set_condition(
                conditions,
                REQUESTS_ACCEPTED,
                false,
                first.reason,
                &message,
                input,
            );
        }
    }
}

impl StatusInput<'_> {
    fn recorded_master_fenced(&self, fenced: &[String]) -> bool {
        self.previous
            .current_master
            .as_ref()
            .is_some_and(|m| fenced.contains(m))
    }
}
