//! The planner's tests: every decision of the safety rules, without a cluster.

use std::time::Duration;

use super::fixtures::*;
use super::*;
use crate::api::Topology;
use crate::labels::RoleLabel;
use crate::redis::Role;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn empty_set_creates_every_pod_and_waits() {
    let p = plan(&input(3, RecordedRoles::default(), vec![]));
    assert_eq!(p.create, vec![0, 1, 2]);
    assert_eq!(p.master, MasterState::AwaitingBootstrap);
    assert_eq!((p.intent, p.promote), (None, None));
}

#[test]
fn bootstrap_records_intent_then_promotes_lowest_ordinal_among_equals() {
    let mut i = input(
        3,
        RecordedRoles::default(),
        vec![
            inst(0, fenced(0), None),
            inst(1, fenced(0), None),
            inst(2, None, None),
        ],
    );
    i.policy.bootstrap_grace_over = true;
    let p = plan(&i);
    let intent = p.intent.expect("intent");
    assert_eq!(
        (intent.master.as_str(), intent.epoch, intent.promotes),
        ("cache-0", 1, true)
    );
    assert_eq!(p.change, Some(Change::Bootstrap));
    assert_eq!(p.promote.as_deref(), Some("cache-0"));
    assert_eq!(p.label_master.as_deref(), Some("cache-0"));
    assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
    assert_eq!(
        p.label_replicas,
        names(&["cache-1"]),
        "the unreachable pod is left alone"
    );
}

#[test]
fn bootstrap_waits_for_every_instance_until_the_grace_is_over() {
    let early = input(
        3,
        RecordedRoles::default(),
        vec![inst(1, fenced(0), None), inst(2, fenced(0), None)],
    );
    let p = plan(&early);
    assert_eq!(
        (p.master, p.promote),
        (MasterState::AwaitingBootstrap, None)
    );
    let mut late = early;
    late.policy.bootstrap_grace_over = true;
    assert_eq!(plan(&late).promote.as_deref(), Some("cache-1"));
}

#[test]
fn bootstrap_prefers_the_instance_with_most_data() {
    let p = plan(&input(
        2,
        RecordedRoles::default(),
        vec![inst(0, fenced(10), None), inst(1, fenced(500), None)],
    ));
    assert_eq!(p.promote.as_deref(), Some("cache-1"));
}

#[test]
fn steady_state_does_nothing() {
    let p = plan(&input(
        3,
        recorded(0, 1),
        vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 90), Some(RoleLabel::Replica)),
        ],
    ));
    assert!(p.create.is_empty() && p.rewire.is_empty() && p.unlabel.is_empty());
    assert_eq!(
        (p.intent, p.promote, p.change, p.label_master),
        (None, None, None, None)
    );
    assert!(p.label_replicas.is_empty());
}

#[test]
fn a_returning_fenced_replica_is_rewired_then_labelled() {
    let p = plan(&input(
        2,
        recorded(0, 1),
        vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            inst(1, fenced(0), None),
        ],
    ));
    assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
    assert_eq!(p.label_replicas, names(&["cache-1"]));
    assert_eq!(p.promote, None);
}

#[test]
fn a_returning_old_master_loses_its_label_first_and_is_labelled_only_after_rewiring() {
    let p = plan(&input(
        2,
        recorded(0, 3),
        vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            inst(1, master(40), Some(RoleLabel::Master)),
        ],
    ));
    assert_eq!(p.unlabel, names(&["cache-1"]));
    assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
    assert_eq!(p.label_replicas, names(&["cache-1"]));
    assert_eq!(p.intent, None);
}

#[test]
fn a_restarted_empty_master_is_replaced_by_the_replica_with_most_data() {
    let p = plan(&input(
        3,
        recorded(0, 1),
        vec![
            inst(0, fenced(0), Some(RoleLabel::Master)),
            inst(1, replica_of(0, 900), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 800), Some(RoleLabel::Replica)),
        ],
    ));
    let intent = p.intent.expect("intent");
    assert_eq!((intent.master.as_str(), intent.epoch), ("cache-1", 2));
    assert!(matches!(p.change, Some(Change::Failover { ref from, .. }) if from == "cache-0"));
    assert_eq!(
        p.unlabel,
        names(&["cache-0"]),
        "the old master's label goes first"
    );
    assert_eq!(p.label_master.as_deref(), Some("cache-1"));
    assert_eq!(rewired(&p.rewire), names(&["cache-0", "cache-2"]));
}

#[test]
fn a_single_restarted_master_is_master_again() {
    let p = plan(&input(
        1,
        recorded(0, 1),
        vec![inst(0, fenced(0), Some(RoleLabel::Master))],
    ));
    assert_eq!(p.promote.as_deref(), Some("cache-0"));
    assert_eq!(p.intent.expect("intent").epoch, 2);
}

/// Rule 2 for every (master data less / equal / more) x (failover on / off): the promoted
/// instance holds at least the data of every other, so nobody's data is overwritten.
#[test]
fn a_restarted_master_never_overwrites_more_data() {
    for enabled in [true, false] {
        for (own, expected_on, expected_off) in [
            (500, "cache-1", "cache-1"),
            (900, "cache-1", "cache-0"),
            (1200, "cache-0", "cache-0"),
        ] {
            let mut i = input(
                3,
                recorded(0, 1),
                vec![
                    inst(0, fenced(own), Some(RoleLabel::Master)),
                    inst(1, lost_link_to(0, 900, 1), Some(RoleLabel::Replica)),
                    inst(2, lost_link_to(0, 700, 1), Some(RoleLabel::Replica)),
                ],
            );
            i.policy.enabled = enabled;
            let p = plan(&i);
            let case = format!("failover {enabled}, master offset {own}");
            let promoted = p.promote.clone().expect(&case);
            let expected = if enabled { expected_on } else { expected_off };
            assert_eq!(promoted, expected, "{case}");
            let most = i.instances.iter().map(offset).max().unwrap_or(0);
            let chosen = i.instances.iter().find(|x| x.name == promoted);
            assert_eq!(chosen.map(offset), Some(most), "{case}");
            let change = p.change.clone().expect(&case);
            match (enabled, own < 900) {
                (true, _) => assert!(matches!(change, Change::Failover { .. }), "{case}"),
                (false, true) => assert_eq!(
                    change,
                    Change::Refill {
                        master: "cache-0".into(),
                        missing_bytes: 400
                    },
                    "{case}"
                ),
                (false, false) => assert_eq!(change, Change::Restore, "{case}"),
            }
        }
    }
}

#[test]
fn a_refilled_master_is_fed_by_the_richest_replica_then_takes_the_role_back() {
    let mut i = input(
        3,
        recorded(0, 1),
        vec![
            inst(0, fenced(0), Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 900, 1), Some(RoleLabel::Replica)),
            inst(2, lost_link_to(0, 900, 1), Some(RoleLabel::Replica)),
        ],
    );
    i.policy.enabled = false;
    let p = plan(&i);
    let intent = p.intent.clone().expect("intent");
    assert_eq!(
        (intent.master.as_str(), intent.epoch, intent.hand_back_to),
        ("cache-1", 2, Some("cache-0".to_string()))
    );
    assert_eq!(
        p.unlabel,
        names(&["cache-0"]),
        "the empty master serves nobody"
    );
    assert_eq!(rewired(&p.rewire), names(&["cache-0", "cache-2"]));

    // Still syncing: the stand-in stays master and the hand-back stays recorded.
    let mut rec = recorded(1, 2);
    rec.hand_back_to = Some("cache-0".into());
    let syncing = Role::Replica {
        master: addr(1),
        link_up: false,
        sync_in_progress: true,
        link_down_seconds: None,
    };
    let mut later = input(
        3,
        rec,
        vec![
            inst(0, Some(info(syncing, 0)), None),
            inst(1, master(900), Some(RoleLabel::Master)),
            inst(2, replica_of(1, 900), Some(RoleLabel::Replica)),
        ],
    );
    later.policy.enabled = false;
    let p = plan(&later);
    assert_eq!((p.promote, p.intent), (None, None));

    // The stand-in crashes and returns with less than the refilled master: the role goes
    // straight home, and nothing is left to hand back.
    let mut crashed = later.clone();
    crashed.instances[0] = inst(0, replica_of(1, 900), Some(RoleLabel::Replica));
    crashed.instances[1] = inst(1, fenced(100), Some(RoleLabel::Master));
    let p = plan(&crashed);
    assert_eq!(p.promote.as_deref(), Some("cache-0"));
    assert_eq!(p.intent.and_then(|x| x.hand_back_to), None);

    // In sync: it takes the role back with FAILOVER TO, and the hand-back is done.
    later.instances[0] = inst(0, replica_of(1, 900), Some(RoleLabel::Replica));
    let p = plan(&later);
    assert_eq!(p.switchover_from.as_deref(), Some("cache-1"));
    assert_eq!(p.promote.as_deref(), Some("cache-0"));
    let intent = p.intent.expect("intent");
    assert_eq!((intent.epoch, intent.hand_back_to), (3, None));
    assert!(matches!(p.change, Some(Change::Switchover { .. })));
}

#[test]
fn a_restarted_master_waits_when_only_an_unpromotable_replica_has_more() {
    for enabled in [true, false] {
        let mut richer = inst(1, lost_link_to(0, 900, 1), Some(RoleLabel::Replica));
        richer.priority = 0;
        let mut i = input(
            2,
            recorded(0, 1),
            vec![inst(0, fenced(100), Some(RoleLabel::Master)), richer],
        );
        i.policy.enabled = enabled;
        let p = plan(&i);
        assert_eq!(p.promote, None, "failover {enabled}");
        let MasterState::Unavailable {
            why_no_failover: Some(why),
            ..
        } = p.master
        else {
            panic!("failover {enabled}: {:?}", p.master);
        };
        assert!(
            why.contains("redis.vigil.dev/force-master=cache-0"),
            "{why}"
        );
    }
}

#[test]
fn only_the_force_master_request_discards_data() {
    let mut i = input(
        2,
        recorded(0, 1),
        vec![
            inst(0, fenced(0), Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 900, 1), Some(RoleLabel::Replica)),
        ],
    );
    i.policy.enabled = false;
    i.force_master = Some("cache-0".into());
    let p = plan(&i);
    assert_eq!(p.promote.as_deref(), Some("cache-0"));
    assert_eq!(
        p.change,
        Some(Change::Forced {
            discarded_bytes: 900
        })
    );
    assert_eq!(p.force_request, Some(RequestOutcome::Done));

    i.force_master = Some("cache-7".into());
    let p = plan(&i);
    assert!(matches!(p.force_request, Some(RequestOutcome::Rejected(_))));
    assert_eq!(
        p.promote.as_deref(),
        Some("cache-1"),
        "planned as without it"
    );

    let mut steady = input(
        2,
        recorded(0, 1),
        vec![
            inst(0, master(900), Some(RoleLabel::Master)),
            inst(1, replica_of(0, 900), Some(RoleLabel::Replica)),
        ],
    );
    steady.force_master = Some("cache-0".into());
    let p = plan(&steady);
    assert_eq!(
        (p.force_request, p.promote),
        (Some(RequestOutcome::Done), None)
    );
}

#[test]
fn an_interrupted_switchover_is_finished_with_failover_to_or_undone() {
    let mut rec = recorded(1, 3);
    rec.target_master = Some("cache-1".into());
    let mut i = input(
        2,
        rec,
        vec![
            inst(0, master(900), Some(RoleLabel::Master)),
            inst(1, replica_of(0, 900), Some(RoleLabel::Replica)),
        ],
    );
    let p = plan(&i);
    assert_eq!(p.switchover_from.as_deref(), Some("cache-0"));
    assert_eq!(p.promote.as_deref(), Some("cache-1"));
    assert_eq!(p.intent.map(|x| x.epoch), Some(3), "the recorded epoch");

    // The old master does not answer but its pod is ready: nothing is promoted yet.
    i.instances[0].redis = None;
    let p = plan(&i);
    assert_eq!((p.promote, p.intent), (None, None));
    assert!(matches!(p.master, MasterState::Unavailable { .. }));
    i.instances[0].pod_ready = false;
    assert_eq!(
        plan(&i).promote.as_deref(),
        Some("cache-1"),
        "its pod is not ready"
    );
    i.instances[0] = inst(0, master(900), Some(RoleLabel::Master));

    // Not in sync with the old master, which still takes writes: it stays the master.
    i.instances[1] = inst(1, fenced(400), Some(RoleLabel::Replica));
    let p = plan(&i);
    assert_eq!(p.promote, None);
    assert_eq!(
        p.change,
        Some(Change::RolledBack {
            target: "cache-1".into()
        })
    );
    let intent = p.intent.expect("intent");
    assert_eq!(
        (intent.master.as_str(), intent.epoch, intent.promotes),
        ("cache-0", 3, false)
    );
    assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
}

#[test]
fn an_interrupted_promotion_resumes_without_a_new_epoch() {
    let mut rec = recorded(1, 2);
    rec.target_master = Some("cache-1".into());
    let p = plan(&input(
        2,
        rec,
        vec![
            inst(0, fenced(0), None),
            inst(1, replica_of(0, 900), Some(RoleLabel::Replica)),
        ],
    ));
    assert_eq!(p.intent, None);
    assert_eq!(p.change, Some(Change::Resume));
    assert_eq!(p.promote.as_deref(), Some("cache-1"));
    assert_eq!(rewired(&p.rewire), names(&["cache-0"]));
}

#[test]
fn an_unreachable_master_is_only_suspected_before_down_after() {
    let p = plan(&down_master(
        Duration::from_millis(900),
        vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 10, 9), Some(RoleLabel::Replica)),
        ],
    ));
    assert_eq!(p.master_down, Some(MasterDown::Suspected));
    assert_eq!((p.intent, p.promote), (None, None));
    assert!(
        p.unlabel.is_empty() && p.rewire.is_empty(),
        "nothing moves while suspected"
    );
}

#[test]
fn only_the_operator_being_cut_off_is_not_a_failure() {
    let p = plan(&down_master(
        LONG,
        vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, replica_of(0, 10), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 10), Some(RoleLabel::Replica)),
        ],
    ));
    assert_eq!(p.master_down, Some(MasterDown::Subjective));
    assert_eq!(p.promote, None);
}

#[test]
fn replicas_losing_their_link_corroborate_and_the_most_advanced_is_promoted() {
    let p = plan(&down_master(
        LONG,
        vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 500, 6), Some(RoleLabel::Replica)),
            inst(2, lost_link_to(0, 700, 6), Some(RoleLabel::Replica)),
        ],
    ));
    assert!(matches!(p.master_down, Some(MasterDown::Objective { .. })));
    let intent = p.intent.expect("intent");
    assert_eq!((intent.master.as_str(), intent.epoch), ("cache-2", 5));
    assert_eq!(p.unlabel, names(&["cache-0"]));
    assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
    assert_eq!(p.label_master.as_deref(), Some("cache-2"));
}

#[test]
fn a_minority_of_replicas_losing_the_link_does_not_corroborate() {
    let p = plan(&down_master(
        LONG,
        vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 500, 6), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 700), Some(RoleLabel::Replica)),
        ],
    ));
    assert_eq!(p.master_down, Some(MasterDown::Subjective));
}

#[test]
fn an_unready_master_that_its_replicas_still_hear_is_not_replaced_but_a_missing_one_is() {
    let mut master_pod = inst(0, None, Some(RoleLabel::Master));
    master_pod.pod_ready = false;
    let replicas = vec![
        inst(1, replica_of(0, 5), Some(RoleLabel::Replica)),
        inst(2, replica_of(0, 5), Some(RoleLabel::Replica)),
    ];
    // Rule 9: its replicas may keep acknowledging it, so it may keep taking writes.
    let p = plan(&down_master(
        LONG,
        [vec![master_pod], replicas.clone()].concat(),
    ));
    assert_eq!(p.master_down, Some(MasterDown::Subjective));
    assert_eq!(p.promote, None);
    let p = plan(&down_master(LONG, replicas));
    assert!(
        matches!(p.master_down, Some(MasterDown::Objective { ref evidence }) if evidence.contains("gone"))
    );
    assert_eq!(
        p.promote.as_deref(),
        Some("cache-1"),
        "equal offsets: lowest ordinal"
    );
}

#[test]
fn a_silent_master_is_replaced_only_after_it_must_have_fenced_itself() {
    let instances = vec![
        inst(0, None, Some(RoleLabel::Master)),
        inst(1, lost_link_to(0, 500, 9), Some(RoleLabel::Replica)),
        inst(2, lost_link_to(0, 400, 9), Some(RoleLabel::Replica)),
    ];
    let hold = crate::isolation::promotion_hold(FailoverPolicy::default().down_after);
    let mut i = down_master(LONG, instances);
    i.policy.silence_recorded_for = Some(hold - Duration::from_millis(1));
    let p = plan(&i);
    assert_eq!(
        p.promote, None,
        "the apiserver may have confirmed it just before the record"
    );
    assert!(matches!(
        p.master,
        MasterState::Unavailable { why_no_failover: Some(ref w), .. } if w.contains("fenced itself")
    ));
    i.policy.silence_recorded_for = None;
    assert_eq!(plan(&i).promote, None, "never recorded silent");
    i.policy.silence_recorded_for = Some(hold);
    assert_eq!(plan(&i).promote.as_deref(), Some("cache-1"));
    // A replica seen moving less than downAfter ago has not corroborated the silence yet.
    let seen = |i: &mut PlanInput, moved_ms| {
        for r in &mut i.instances[1..] {
            r.still = Some(crate::isolation::Stillness {
                state: Duration::from_secs(4),
                upstream: LONG,
                state_at_most: Duration::from_millis(moved_ms),
            });
        }
    };
    seen(&mut i, 4_000);
    assert_eq!(plan(&i).promote, None);
    // Seen still for 4 s, moving at the probe an interval before: silent for downAfter as the
    // master is, counted from the last answer showing it alive; and still for the hold.
    seen(&mut i, 5_000);
    assert_eq!(plan(&i).promote.as_deref(), Some("cache-1"));
}

#[test]
fn replicas_no_further_than_the_masters_last_reply_corroborate_from_that_reply() {
    // Frozen: the replicas' final offsets were first seen 300 ms ago (they are probed once an
    // interval), but they hold no more than the master's last reply, 5 s ago, did.
    let still = |i: &mut ObservedInstance| {
        i.still = Some(crate::isolation::Stillness {
            state: Duration::from_millis(300),
            upstream: LONG,
            state_at_most: Duration::from_millis(1300),
        });
    };
    let mut instances = vec![
        inst(0, None, Some(RoleLabel::Master)),
        inst(1, replica_of(0, 500), Some(RoleLabel::Replica)),
        inst(2, replica_of(0, 490), Some(RoleLabel::Replica)),
    ];
    instances[1..].iter_mut().for_each(still);
    let down_after = FailoverPolicy::default().down_after;
    let mut i = down_master(down_after, instances);
    i.instances[0].silent_for = Some(down_after);
    assert_eq!(plan(&i).promote, None, "no offset known for the last reply");
    i.instances[0].silent_at_offset = Some(500);
    assert_eq!(plan(&i).promote.as_deref(), Some("cache-1"));
    i.instances[0].silent_at_offset = Some(499);
    assert_eq!(
        plan(&i).promote,
        None,
        "cache-1 processed what the master wrote after its last reply: it may still ack it"
    );
    i.instances[0].silent_at_offset = Some(500);
    i.instances[0].silent_for = Some(down_after - Duration::from_millis(1));
    assert_eq!(plan(&i).promote, None, "silent for less than downAfter");
}

#[test]
fn silence_is_recorded_so_that_the_hold_ends_at_down_after() {
    let down_after = FailoverPolicy::default().down_after;
    let since = down_after - crate::isolation::promotion_hold(down_after);
    let instances = vec![
        inst(0, None, Some(RoleLabel::Master)),
        inst(1, replica_of(0, 5), Some(RoleLabel::Replica)),
    ];
    let early = down_master(since - Duration::from_millis(1), instances.clone());
    let p = plan(&early);
    assert_eq!(p.master_down, Some(MasterDown::Suspected));
    assert!(!p.record_silence, "a blip keeps the apiserver's word");
    assert!(plan(&down_master(since, instances.clone())).record_silence);
    assert!(plan(&down_master(LONG, instances)).record_silence);
    let mut short = down_master(Duration::ZERO, vec![inst(0, None, None)]);
    short.policy.down_after = Duration::from_secs(1);
    assert!(
        plan(&short).record_silence,
        "at 1 s the hold outlasts downAfter: record at once"
    );
}

#[test]
fn in_a_five_set_a_master_keeping_one_replica_of_four_is_replaced_two_is_not() {
    let lost = |o| inst(o, lost_link_to(0, 500, 9), Some(RoleLabel::Replica));
    let linked = |o| inst(o, replica_of(0, 500), Some(RoleLabel::Replica));
    let master = || inst(0, None, Some(RoleLabel::Master));
    let mut i = down_master(LONG, vec![master(), lost(1), lost(2), lost(3), linked(4)]);
    i.desired_instances = 5;
    assert_eq!(
        plan(&i).promote.as_deref(),
        Some("cache-1"),
        "1 of 4 is no quorum"
    );
    let mut i = down_master(LONG, vec![master(), lost(1), lost(2), linked(3), linked(4)]);
    i.desired_instances = 5;
    assert_eq!(plan(&i).promote, None, "2 of 4 keep it master");
}

#[test]
fn priority_breaks_offset_ties_and_zero_is_never_promoted() {
    let mut a = inst(1, lost_link_to(0, 500, 9), Some(RoleLabel::Replica));
    let mut b = inst(2, lost_link_to(0, 500, 9), Some(RoleLabel::Replica));
    a.priority = 50;
    b.priority = 10;
    let p = plan(&down_master(LONG, vec![a.clone(), b.clone()]));
    assert_eq!(p.promote.as_deref(), Some("cache-2"));
    b.priority = 0;
    let p = plan(&down_master(LONG, vec![a, b]));
    assert_eq!(p.promote.as_deref(), Some("cache-1"));
}

#[test]
fn a_replica_in_full_sync_is_never_promoted() {
    let mut syncing = lost_link_to(0, 900, 9).expect("info");
    if let Role::Replica {
        sync_in_progress, ..
    } = &mut syncing.role
    {
        *sync_in_progress = true;
    }
    let p = plan(&down_master(
        LONG,
        vec![
            inst(1, Some(syncing), Some(RoleLabel::Replica)),
            inst(2, lost_link_to(0, 10, 9), Some(RoleLabel::Replica)),
        ],
    ));
    assert_eq!(p.promote.as_deref(), Some("cache-2"));
}

#[test]
fn disabled_failover_and_cooldown_keep_the_master_recorded() {
    let instances = vec![
        inst(0, None, Some(RoleLabel::Master)),
        inst(1, lost_link_to(0, 5, 9), Some(RoleLabel::Replica)),
    ];
    let mut i = down_master(LONG, instances.clone());
    i.desired_instances = 2;
    i.policy.enabled = false;
    let p = plan(&i);
    assert!(
        matches!(p.master, MasterState::Unavailable { why_no_failover: Some(ref w), .. } if w.contains("disabled"))
    );
    assert_eq!(p.promote, None);
    let mut i = down_master(LONG, instances);
    i.desired_instances = 2;
    i.policy.cooldown_remaining = Some(Duration::from_secs(3));
    let p = plan(&i);
    assert!(
        matches!(p.master, MasterState::Unavailable { why_no_failover: Some(ref w), .. } if w.contains("recently"))
    );
    assert_eq!(p.promote, None);
}

#[test]
fn no_candidate_no_failover() {
    let p = plan(&down_master(
        LONG,
        vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, None, Some(RoleLabel::Replica)),
        ],
    ));
    assert!(matches!(p.master, MasterState::Unavailable { .. }));
    assert_eq!(p.promote, None);
}

#[test]
fn deleting_the_master_pod_switches_over_to_a_synced_replica() {
    let mut m = inst(0, master(100), Some(RoleLabel::Master));
    m.deleting = true;
    let p = plan(&input(
        3,
        recorded(0, 2),
        vec![
            m,
            inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
        ],
    ));
    assert_eq!(
        p.change,
        Some(Change::Switchover {
            from: "cache-0".into(),
            reason: "pod cache-0 is being deleted".into(),
        })
    );
    assert_eq!(p.switchover_from.as_deref(), Some("cache-0"));
    assert_eq!(p.promote.as_deref(), Some("cache-1"));
    assert_eq!(p.intent.expect("intent").epoch, 3);
    assert_eq!(p.unlabel, names(&["cache-0"]));
    assert_eq!(
        rewired(&p.rewire),
        names(&["cache-2"]),
        "the leaving master is not rewired"
    );
}

#[test]
fn a_moved_master_pod_gets_its_new_address_recorded() {
    let mut rec = recorded(0, 4);
    rec.master_address = Some("10.244.0.99:6379".into());
    let p = plan(&input(
        1,
        rec,
        vec![inst(0, master(5), Some(RoleLabel::Master))],
    ));
    let intent = p.intent.expect("intent");
    assert_eq!((intent.epoch, intent.promotes), (4, false));
    assert_eq!(intent.address, addr(0));
    assert_eq!(p.change, None);
}

#[test]
fn scale_down_removes_replicas_and_the_master_hands_over_first() {
    let mut behind = replica_of(2, 5).expect("info");
    behind.role = replica_role(addr(2), Some(3));
    let instances = vec![
        inst(0, Some(behind), Some(RoleLabel::Replica)),
        inst(1, replica_of(2, 5), Some(RoleLabel::Replica)),
        inst(2, master(5), Some(RoleLabel::Master)),
    ];
    let p = plan(&input(1, recorded(2, 1), instances.clone()));
    assert_eq!(p.delete, names(&["cache-1"]));
    assert!(p.scale_down_blocked.expect("blocked").contains("cache-2"));
    assert_eq!(
        p.promote, None,
        "no staying replica is linked yet: the master stays"
    );

    let mut linked = instances;
    linked[0].redis = replica_of(2, 5);
    let p = plan(&input(1, recorded(2, 1), linked));
    assert_eq!(p.delete, names(&["cache-1"]));
    assert_eq!(p.promote.as_deref(), Some("cache-0"));
    assert_eq!(p.switchover_from.as_deref(), Some("cache-2"));
    assert_eq!(p.unlabel, names(&["cache-2"]));
    assert!(p.rewire.is_empty(), "FAILOVER itself demotes cache-2");
}

#[test]
fn pods_being_deleted_are_not_recreated_or_touched() {
    let mut going = inst(1, replica_of(0, 5), Some(RoleLabel::Replica));
    going.deleting = true;
    let p = plan(&input(
        2,
        recorded(0, 1),
        vec![inst(0, master(5), Some(RoleLabel::Master)), going],
    ));
    assert!(p.create.is_empty() && p.rewire.is_empty() && p.delete.is_empty());
}

#[test]
fn leaving_instances_are_never_elected() {
    let p = plan(&input(
        1,
        RecordedRoles::default(),
        vec![inst(0, fenced(1), None), inst(1, fenced(99), None)],
    ));
    assert_eq!(p.delete, names(&["cache-1"]));
    assert_eq!(p.promote.as_deref(), Some("cache-0"));
}

fn upstream_names(p: &Plan) -> Vec<(String, String)> {
    p.rewire
        .iter()
        .map(|r| (r.name.clone(), r.upstream.to_string()))
        .collect()
}

#[test]
fn chain_topology_links_each_replica_to_the_previous_one() {
    let mut i = input(
        4,
        recorded(0, 1),
        vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
            inst(3, replica_of(0, 100), Some(RoleLabel::Replica)),
        ],
    );
    i.topology = Topology::Chain;
    let p = plan(&i);
    assert_eq!(
        upstream_names(&p),
        vec![
            ("cache-2".to_string(), addr(1).to_string()),
            ("cache-3".to_string(), addr(2).to_string())
        ]
    );
    i.topology = Topology::Star;
    assert!(
        plan(&i).rewire.is_empty(),
        "star: everyone follows the master"
    );
}

#[test]
fn a_broken_or_syncing_link_is_skipped_until_it_is_in_sync() {
    let mut i = input(
        3,
        recorded(0, 1),
        vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            inst(1, None, Some(RoleLabel::Replica)),
            inst(2, replica_of(1, 80), Some(RoleLabel::Replica)),
        ],
    );
    i.topology = Topology::Chain;
    assert_eq!(
        upstream_names(&plan(&i)),
        vec![("cache-2".to_string(), addr(0).to_string())],
        "cache-1 is unreachable: cache-2 follows the master"
    );
    i.instances[1].redis = fenced(0);
    i.instances[2].redis = replica_of(0, 100);
    assert_eq!(
        upstream_names(&plan(&i)),
        vec![("cache-1".to_string(), addr(0).to_string())],
        "cache-1 came back: it syncs from the master, cache-2 stays on the master meanwhile"
    );
    i.instances[1].redis = replica_of(0, 100);
    assert_eq!(
        upstream_names(&plan(&i)),
        vec![("cache-2".to_string(), addr(1).to_string())]
    );
}

#[test]
fn after_a_failover_the_chain_is_rebuilt_from_the_new_master() {
    let mut i = down_master(
        LONG,
        vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 700, 6), Some(RoleLabel::Replica)),
            inst(2, replica_of(1, 690), Some(RoleLabel::Replica)),
        ],
    );
    i.topology = Topology::Chain;
    // cache-2 has followed cache-1 all along: it never acks the master itself.
    i.instances[2].still = Some(crate::isolation::Stillness {
        state: Duration::ZERO,
        upstream: LONG,
        state_at_most: Duration::ZERO,
    });
    let p = plan(&i);
    assert_eq!(p.promote.as_deref(), Some("cache-1"));
    assert!(
        p.rewire.is_empty(),
        "cache-2 already follows cache-1, the new head of the chain"
    );
}

fn steady_three() -> Vec<ObservedInstance> {
    vec![
        inst(0, master(100), Some(RoleLabel::Master)),
        inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
        inst(2, replica_of(0, 100), Some(RoleLabel::Replica)),
    ]
}

#[test]
fn a_requested_switchover_goes_to_the_named_synced_replica() {
    let mut i = input(3, recorded(0, 2), steady_three());
    i.switchover_to = Some("cache-2".into());
    let p = plan(&i);
    assert_eq!(p.promote.as_deref(), Some("cache-2"));
    assert_eq!(p.switchover_from.as_deref(), Some("cache-0"));
    assert_eq!(p.intent.as_ref().map(|i| i.epoch), Some(3));
    assert!(
        matches!(p.change, Some(Change::Switchover { ref reason, .. }) if reason.contains("user"))
    );
    assert_eq!(p.request, Some(RequestOutcome::Done));
    assert_eq!(p.unlabel, names(&["cache-0"]));
    assert_eq!(rewired(&p.rewire), names(&["cache-1"]));
    assert!(p.roll.is_none());
}

#[test]
fn a_switchover_request_is_done_rejected_or_waits() {
    let outcome = |wanted: &str, instances: Vec<ObservedInstance>| {
        let mut i = input(3, recorded(0, 2), instances);
        i.switchover_to = Some(wanted.into());
        let p = plan(&i);
        assert_eq!(p.promote, None, "{wanted}");
        p.request.expect("outcome")
    };
    assert_eq!(outcome("cache-0", steady_three()), RequestOutcome::Done);
    assert!(
        matches!(outcome("cache-7", steady_three()), RequestOutcome::Rejected(w) if w.contains("not an instance"))
    );
    let mut never = steady_three();
    never[2].priority = 0;
    assert!(
        matches!(outcome("cache-2", never), RequestOutcome::Rejected(w) if w.contains("priority 0"))
    );
    let mut behind = steady_three();
    behind[2].redis = lost_link_to(0, 50, 2);
    assert!(
        matches!(outcome("cache-2", behind), RequestOutcome::Waiting(w) if w.contains("synced"))
    );
}

#[test]
fn in_a_chain_the_switchover_target_first_moves_under_the_master() {
    let mut i = input(
        3,
        recorded(0, 2),
        vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
            inst(2, replica_of(1, 100), Some(RoleLabel::Replica)),
        ],
    );
    i.topology = Topology::Chain;
    i.switchover_to = Some("cache-2".into());
    let p = plan(&i);
    assert_eq!(p.promote, None);
    assert!(matches!(p.request, Some(RequestOutcome::Waiting(_))));
    assert_eq!(
        upstream_names(&p),
        vec![("cache-2".to_string(), addr(0).to_string())]
    );
}

#[test]
fn the_rolling_update_replaces_replicas_highest_first_then_hands_the_master_over() {
    let mut all = steady_three();
    for i in &mut all {
        i.spec_outdated = true;
    }
    let p = plan(&input(3, recorded(0, 2), all.clone()));
    assert_eq!(p.roll.as_deref(), Some("cache-2"));
    assert_eq!(p.promote, None, "the master goes last");

    let mut replaced = all.clone();
    replaced[2].spec_outdated = false;
    replaced[2].redis = lost_link_to(0, 10, 1);
    replaced[2].pod_ready = false;
    let p = plan(&input(3, recorded(0, 2), replaced.clone()));
    assert_eq!(p.roll, None, "the new cache-2 is not in sync yet");

    replaced[2].redis = replica_of(0, 100);
    replaced[2].pod_ready = true;
    let p = plan(&input(3, recorded(0, 2), replaced.clone()));
    assert_eq!(p.roll.as_deref(), Some("cache-1"));

    replaced[1].spec_outdated = false;
    replaced[1].config_outdated = false;
    let p = plan(&input(3, recorded(0, 2), replaced.clone()));
    assert_eq!(p.roll, None);
    assert_eq!(p.promote.as_deref(), Some("cache-1"));
    assert_eq!(p.switchover_from.as_deref(), Some("cache-0"));
    assert!(
        matches!(p.change, Some(Change::Switchover { ref reason, .. }) if reason.contains("rolling"))
    );
}

#[test]
fn the_rolling_update_waits_while_anything_else_happens() {
    let mut going = steady_three();
    going[2].spec_outdated = true;
    going[1].deleting = true;
    assert_eq!(plan(&input(3, recorded(0, 2), going)).roll, None);
    let mut missing = steady_three();
    missing[1].config_outdated = true;
    missing.pop();
    assert_eq!(plan(&input(3, recorded(0, 2), missing)).roll, None);
    let mut single = vec![inst(0, master(5), Some(RoleLabel::Master))];
    single[0].spec_outdated = true;
    assert_eq!(
        plan(&input(1, recorded(0, 2), single)).roll.as_deref(),
        Some("cache-0"),
        "a lone instance can only be replaced"
    );
}

/// Safety rules 1, 5 and 6 as the order of the steps, for every kind of change: stray
/// master labels go first; the intent is recorded before any instance is touched; the
/// master label moves only after the promotion; an instance is rewired before it is
/// labelled replica.
#[test]
fn every_plan_runs_its_steps_in_the_safe_order() {
    let mut down = down_master(
        LONG,
        vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 900, 9), Some(RoleLabel::Replica)),
            inst(2, lost_link_to(0, 800, 9), None),
        ],
    );
    down.instances[0].pod_ready = false;
    let returning = input(
        3,
        recorded(1, 2),
        vec![
            inst(0, master(500), Some(RoleLabel::Master)),
            inst(1, master(900), None),
            inst(2, replica_of(0, 500), Some(RoleLabel::Replica)),
        ],
    );
    let mut bootstrap = input(
        3,
        RecordedRoles::default(),
        vec![
            inst(0, fenced(0), None),
            inst(1, fenced(0), None),
            inst(2, fenced(0), None),
        ],
    );
    bootstrap.policy.bootstrap_grace_over = true;
    let mut switchover = input(3, recorded(0, 1), steady_three());
    switchover.switchover_to = Some("cache-2".into());
    let mut refill = input(
        3,
        recorded(0, 1),
        vec![
            inst(0, fenced(0), Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 900, 1), Some(RoleLabel::Replica)),
            inst(2, lost_link_to(0, 900, 1), None),
        ],
    );
    refill.policy.enabled = false;
    let mut forced = refill.clone();
    forced.force_master = Some("cache-0".into());
    for (what, i) in [
        ("failover", down),
        ("returning old master", returning),
        ("bootstrap", bootstrap),
        ("switchover", switchover),
        ("refill", refill),
        ("forced", forced),
    ] {
        let steps = plan(&i).steps();
        let at = |f: &dyn Fn(&Step) -> bool| steps.iter().position(f);
        let all = |f: &dyn Fn(&Step) -> bool| -> Vec<usize> {
            steps
                .iter()
                .enumerate()
                .filter(|(_, s)| f(s))
                .map(|(n, _)| n)
                .collect()
        };
        let intent = at(&|s| matches!(s, Step::RecordIntent(_)));
        let promotion = at(&|s| matches!(s, Step::Promote(_) | Step::SwitchOver { .. }));
        let touches = all(&|s| {
            matches!(
                s,
                Step::Promote(_)
                    | Step::SwitchOver { .. }
                    | Step::LabelMaster(_)
                    | Step::Rewire(_)
                    | Step::LabelReplica(_)
            )
        });
        assert!(
            promotion.is_some() || what == "returning old master",
            "{what}: {steps:?}"
        );
        for unlabel in all(&|s| matches!(s, Step::Unlabel(_))) {
            assert!(
                touches.iter().all(|t| unlabel < *t),
                "rule 1, {what}: {steps:?}"
            );
            assert!(
                intent.is_none_or(|x| unlabel < x),
                "rule 1, {what}: {steps:?}"
            );
        }
        if let Some(intent) = intent {
            assert!(
                touches.iter().all(|t| intent < *t),
                "rule 5, {what}: {steps:?}"
            );
        }
        if let (Some(p), Some(l)) = (promotion, at(&|s| matches!(s, Step::LabelMaster(_)))) {
            assert!(
                p < l,
                "promotion verified before the label, {what}: {steps:?}"
            );
        }
        for (n, step) in steps.iter().enumerate() {
            if let Step::LabelReplica(name) = step {
                let rewired = at(&|s| matches!(s, Step::Rewire(r) if r.name == *name));
                assert!(rewired.is_none_or(|r| r < n), "rule 6, {what}: {steps:?}");
            }
        }
    }
}

#[test]
fn a_master_whose_process_is_not_running_fails_over_without_waiting_for_down_after() {
    let soon = Duration::from_millis(100);
    let mut crashed = down_master(
        soon,
        vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, replica_of(0, 900), Some(RoleLabel::Replica)),
            inst(2, replica_of(0, 800), Some(RoleLabel::Replica)),
        ],
    );
    let silent = plan(&crashed);
    assert_eq!(silent.promote, None, "silence alone waits for downAfter");
    assert_eq!(silent.master_down, Some(MasterDown::Suspected));

    crashed.instances[0].stopped = Some("container redis terminated (Error, exit code 137)".into());
    let p = plan(&crashed);
    assert_eq!(p.promote.as_deref(), Some("cache-1"));
    assert!(
        matches!(&p.master_down, Some(MasterDown::Objective { evidence }) if evidence.contains("terminated")),
        "{:?}",
        p.master_down
    );

    // The pod gone or going is as objective.
    crashed.instances[0].stopped = None;
    crashed.instances[0].deleting = true;
    assert_eq!(plan(&crashed).promote.as_deref(), Some("cache-1"));
    crashed.instances.remove(0);
    assert_eq!(plan(&crashed).promote.as_deref(), Some("cache-1"));

    // A process that answers is not down, whatever a stale pod status says.
    let mut answering = input(3, recorded(0, 4), steady_three());
    answering.instances[0].stopped = Some("container redis terminated".into());
    assert_eq!(plan(&answering).promote, None);
}
