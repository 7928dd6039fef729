//! The planner's tests for a set that follows an external master (`spec.replicaOf`): its
//! designated master is recorded before it follows the source and is never promoted, the others
//! follow it, a failed one is replaced without waiting for corroboration, and removing
//! `replicaOf` promotes it.

use std::time::Duration;

use super::fixtures::*;
use super::*;
use crate::labels::RoleLabel;
use crate::redis::{REDIS_PORT, ReplicationInfo, Role};

fn source() -> Address {
    Address::new("10.9.0.5", REDIS_PORT)
}

fn following_source(offset: i64) -> Option<ReplicationInfo> {
    Some(info(replica_role(source(), None), offset))
}

fn follower(recorded: RecordedRoles, instances: Vec<ObservedInstance>) -> PlanInput {
    let mut i = input(3, recorded, instances);
    i.following = Some(Source::At(source()));
    i
}

/// cache-0 follows the source, the others follow cache-0.
fn steady() -> Vec<ObservedInstance> {
    vec![
        inst(0, following_source(500), Some(RoleLabel::Master)),
        inst(1, replica_of(0, 500), Some(RoleLabel::Replica)),
        inst(2, replica_of(0, 500), Some(RoleLabel::Replica)),
    ]
}

fn follow(ordinal: u32) -> Step {
    Step::Follow(Rewire {
        name: format!("cache-{ordinal}"),
        upstream: source(),
    })
}

fn rewire(ordinal: u32, upstream: u32) -> Step {
    Step::Rewire(Rewire {
        name: format!("cache-{ordinal}"),
        upstream: addr(upstream),
    })
}

#[test]
fn the_first_designated_master_is_recorded_then_follows_the_source_and_is_never_promoted() {
    let mut i = follower(
        RecordedRoles::default(),
        vec![
            inst(0, fenced(0), None),
            inst(1, fenced(0), None),
            inst(2, fenced(0), None),
        ],
    );
    i.policy.bootstrap_grace_over = true;
    let p = plan(&i);
    assert_eq!(p.change, Some(Change::Bootstrap));
    assert_eq!(p.promote, None, "a following set promotes nobody");
    let intent = p.intent.clone().expect("the designated master is recorded");
    assert!(!intent.promotes);
    assert_eq!(
        p.steps(),
        vec![
            Step::RecordIntent(intent),
            follow(0),
            Step::LabelMaster("cache-0".into()),
            rewire(1, 0),
            rewire(2, 0),
            Step::LabelReplica("cache-1".into()),
            Step::LabelReplica("cache-2".into()),
        ]
    );
}

#[test]
fn a_set_following_its_source_in_sync_is_left_alone() {
    let p = plan(&follower(recorded(0, 1), steady()));
    assert!(p.steps().is_empty(), "{:?}", p.steps());
    assert!(matches!(p.master, MasterState::Acting { ref name, .. } if name == "cache-0"));
}

#[test]
fn a_restarted_designated_master_follows_the_source_again_without_a_new_epoch() {
    let mut instances = steady();
    instances[0].redis = fenced(500);
    let p = plan(&follower(recorded(0, 1), instances));
    assert_eq!(p.steps(), vec![follow(0)]);
}

#[test]
fn a_moved_source_is_followed_at_its_new_address() {
    let mut i = follower(recorded(0, 1), steady());
    let moved = Address::new("10.9.0.6", REDIS_PORT);
    i.following = Some(Source::At(moved.clone()));
    let p = plan(&i);
    assert_eq!(
        p.steps(),
        vec![Step::Follow(Rewire {
            name: "cache-0".into(),
            upstream: moved
        })]
    );
}

#[test]
fn an_unresolved_source_leaves_the_designated_master_where_it_is() {
    let mut instances = steady();
    instances[0].redis = Some(info(replica_role(source(), Some(3)), 500));
    let mut i = follower(recorded(0, 1), instances);
    i.following = Some(Source::Unresolved("Sentinel did not answer".into()));
    assert!(plan(&i).steps().is_empty());
}

#[test]
fn a_silent_designated_master_is_replaced_after_down_after_without_corroboration() {
    let mut instances = steady();
    instances[0].redis = None;
    instances[1].redis = replica_of(0, 400);
    let mut i = follower(recorded(0, 1), instances);
    i.policy.master_unreachable_for = Some(Duration::from_millis(4_000));
    assert!(matches!(
        plan(&i).master,
        MasterState::Unavailable {
            down: MasterDown::Suspected,
            ..
        }
    ));
    i.policy.master_unreachable_for = Some(i.policy.down_after);
    let p = plan(&i);
    let intent = p.intent.clone().expect("a new designated master");
    assert_eq!((intent.master.as_str(), intent.epoch), ("cache-2", 2));
    assert!(!intent.promotes);
    assert!(matches!(p.change, Some(Change::Failover { ref from, .. }) if from == "cache-0"));
    let steps = p.steps();
    assert_eq!(steps[0], Step::Unlabel("cache-0".into()), "rule 1 first");
    assert_eq!(steps[1], Step::RecordIntent(intent));
    assert_eq!(steps[2], follow(2));
    assert!(steps.contains(&rewire(1, 2)));
}

#[test]
fn the_designated_master_hands_its_place_over_last_in_a_rolling_update() {
    let mut instances = steady();
    instances[0].spec_outdated = true;
    let p = plan(&follower(recorded(0, 1), instances));
    assert_eq!(p.roll, None);
    let intent = p.intent.clone().expect("another designated master");
    assert_eq!(intent.master, "cache-1");
    assert!(matches!(p.change, Some(Change::Switchover { .. })));
    assert_eq!(p.switchover_from, None, "no FAILOVER: nobody is master");
    assert!(p.steps().contains(&follow(1)));
}

#[test]
fn switchover_and_force_master_requests_are_rejected_while_following() {
    let mut i = follower(recorded(0, 1), steady());
    i.switchover_to = Some("cache-1".into());
    i.force_master = Some("cache-2".into());
    let p = plan(&i);
    assert!(matches!(p.request, Some(RequestOutcome::Rejected(_))));
    assert!(matches!(p.force_request, Some(RequestOutcome::Rejected(_))));
    assert_eq!(p.intent, None);
    assert_eq!(p.steps(), vec![Step::SettleRequests]);
}

#[test]
fn removing_replica_of_promotes_the_designated_master_with_what_it_received() {
    let mut recorded = recorded(0, 1);
    recorded.following = true;
    let p = plan(&input(3, recorded, steady()));
    assert_eq!(p.change, Some(Change::Detached));
    let intent = p.intent.clone().expect("intent");
    assert_eq!((intent.master.as_str(), intent.epoch), ("cache-0", 2));
    assert_eq!(
        p.steps(),
        vec![Step::RecordIntent(intent), Step::Promote("cache-0".into())]
    );
}

#[test]
fn a_promoted_set_is_an_ordinary_one() {
    let mut recorded = recorded(0, 2);
    recorded.following = true;
    let mut instances = steady();
    instances[0].redis = Some(info(Role::Master, 600));
    let p = plan(&input(3, recorded, instances));
    assert_eq!(p.change, None);
    assert!(p.steps().is_empty(), "{:?}", p.steps());
}
