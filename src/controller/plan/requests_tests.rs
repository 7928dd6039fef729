//! The planner's tests for the user's fencing and hibernation requests: a fenced instance
//! leaves the Services before it stops following anyone, is never promoted, and a master that
//! was fenced or hibernated takes its role back when asked, unless another holds more data.

use super::fixtures::*;
use super::*;
use crate::api::requests::Fencing;
use crate::labels::RoleLabel;

fn fencing(names: &[&str]) -> Fencing {
    Fencing::Instances(names.iter().map(|n| n.to_string()).collect())
}

fn healthy() -> Vec<ObservedInstance> {
    vec![
        inst(0, master(100), Some(RoleLabel::Master)),
        inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
        inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
    ]
}

#[test]
fn a_fenced_replica_leaves_the_services_before_it_follows_nobody() {
    let mut i = input(3, recorded(0, 4), healthy());
    i.fencing = fencing(&["cache-1"]);
    let p = plan(&i);
    assert_eq!(
        p.steps(),
        vec![
            Step::Unlabel("cache-1".into()),
            Step::Fence("cache-1".into())
        ]
    );
    assert!(matches!(p.master, MasterState::Acting { .. }));
}

#[test]
fn a_fenced_instance_is_left_alone_once_fenced_and_never_rewired() {
    let mut i = input(
        3,
        recorded(0, 4),
        vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            inst(1, fenced(90), None),
            inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
        ],
    );
    i.fencing = fencing(&["cache-1"]);
    assert!(plan(&i).steps().is_empty());
}

#[test]
fn a_fenced_replica_is_never_promoted() {
    let mut i = down_master(
        LONG,
        vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 200, 6), None),
            inst(2, lost_link_to(0, 100, 6), Some(RoleLabel::Replica)),
        ],
    );
    i.fencing = fencing(&["cache-1"]);
    let p = plan(&i);
    assert_eq!(
        p.promote.as_deref(),
        Some("cache-2"),
        "the fenced cache-1 holds more but is not a candidate"
    );
    let mut asked = input(3, recorded(0, 4), healthy());
    asked.fencing = fencing(&["cache-1"]);
    asked.switchover_to = Some("cache-1".into());
    assert!(matches!(
        plan(&asked).request,
        Some(RequestOutcome::Rejected(_))
    ));
}

#[test]
fn a_fenced_master_stops_writes_and_is_not_replaced() {
    let mut i = input(3, recorded(0, 4), healthy());
    i.fencing = fencing(&["cache-0"]);
    let p = plan(&i);
    assert_eq!(
        p.master,
        MasterState::Fenced {
            name: "cache-0".into()
        }
    );
    assert_eq!(
        p.steps(),
        vec![
            Step::Unlabel("cache-0".into()),
            Step::Fence("cache-0".into())
        ]
    );
    // Once fenced, its replicas keep following it and nothing is promoted.
    let mut after = input(
        3,
        recorded(0, 4),
        vec![
            inst(0, fenced(100), None),
            inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
        ],
    );
    after.fencing = Fencing::All;
    let p = plan(&after);
    assert_eq!(p.intent, None);
    assert_eq!(
        p.steps(),
        vec![
            Step::Unlabel("cache-1".into()),
            Step::Unlabel("cache-2".into()),
            Step::Fence("cache-1".into()),
            Step::Fence("cache-2".into())
        ]
    );
}

fn unfenced_master(replica_offset: i64) -> PlanInput {
    let mut recorded = recorded(0, 4);
    recorded.fenced = vec!["cache-0".into()];
    input(
        3,
        recorded,
        vec![
            inst(0, fenced(100), None),
            inst(1, replica_of(0, replica_offset), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
        ],
    )
}

#[test]
fn an_unfenced_master_is_master_again() {
    let p = plan(&unfenced_master(100));
    assert_eq!(p.change, Some(Change::Reinstated));
    assert_eq!(p.promote.as_deref(), Some("cache-0"));
    let steps = p.steps();
    assert!(matches!(steps[0], Step::RecordIntent(_)), "{steps:?}");
    assert_eq!(steps[1], Step::Promote("cache-0".into()));
}

#[test]
fn an_unfenced_master_with_less_data_does_not_overwrite_more() {
    let p = plan(&unfenced_master(150));
    assert_ne!(p.promote.as_deref(), Some("cache-0"));
}

#[test]
fn an_unfenced_replica_rejoins_and_is_labelled_after() {
    let mut recorded = recorded(0, 4);
    recorded.fenced = vec!["cache-1".into()];
    let i = input(
        3,
        recorded,
        vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            inst(1, fenced(90), None),
            inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
        ],
    );
    let steps = plan(&i).steps();
    assert!(matches!(&steps[0], Step::Rewire(r) if r.name == "cache-1"));
    assert_eq!(steps[1], Step::LabelReplica("cache-1".into()));
}

fn waking(instances: Vec<ObservedInstance>) -> PlanInput {
    let mut recorded = recorded(0, 4);
    recorded.hibernation = Some(crate::api::HibernationState::Hibernated);
    let mut i = input(3, recorded, instances);
    i.policy.master_unreachable_for = Some(LONG);
    i
}

#[test]
fn waking_creates_the_pods_and_waits_for_the_recorded_master() {
    let p = plan(&waking(vec![]));
    assert_eq!(p.create, vec![0, 1, 2]);
    let mut starting = inst(0, None, None);
    starting.stopped = Some("container redis is waiting to start (ContainerCreating)".into());
    let p = plan(&waking(vec![
        starting,
        inst(1, fenced(100), None),
        inst(2, fenced(100), None),
    ]));
    assert_eq!(p.promote, None, "a starting master is no failure");
    assert!(matches!(p.master, MasterState::Unavailable { .. }));
}

#[test]
fn a_woken_master_takes_its_role_back() {
    let p = plan(&waking(vec![
        inst(0, fenced(120), None),
        inst(1, fenced(100), None),
        inst(2, fenced(100), None),
    ]));
    assert_eq!(p.change, Some(Change::Reinstated));
    assert_eq!(p.promote.as_deref(), Some("cache-0"));
    assert_eq!(rewired(&p.rewire), ["cache-1", "cache-2"]);
}
