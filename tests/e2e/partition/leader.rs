//! (h) of the partition scenarios: a partition while the operator leader changes.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{DOWN_AFTER, Set, TIMEOUT};
use crate::support::outcome::runs;
use crate::support::{Blocked, OperatorOptions, TestNs, wait_for};

/// (h) Two operators elect a leader; the master is cut off as in (a) from both, and the leader is
/// killed as soon as it has recorded the master silent (before it may promote): the standby
/// takes the Lease mid-failover and finishes it. One epoch spent, one instance promoted, no two
/// instances taking writes, no acknowledged write lost, a linearizable history.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_while_the_operator_leader_changes_never_makes_two_masters() {
    if crate::support::skipped_on_kind("needs rules inside the pods' network namespaces") {
        return;
    }
    const UIDS: [u32; 2] = [4250, 4251];
    // Its own Lease: the leader-election test of failover.rs uses the chart's, and may run at
    // the same time.
    const LEASE: &str = "vigil-partition";
    let elected = |uid, tag| OperatorOptions {
        uid: Some(uid),
        tag: Some(tag),
        leader_election: true,
        lease: Some(LEASE),
        ..OperatorOptions::default()
    };
    for _ in 0..runs() {
        let t = TestNs::new("leaderchange").await;
        grant_lease(&t, LEASE).await;
        let first = t.spawn_operator(elected(UIDS[0], "first"));
        // Ready: only a leader reconciles, so the first leads.
        let mut set = Set::create(t, vec![first], 3, DOWN_AFTER).await;
        let standby = set.t.spawn_operator(elected(UIDS[1], "second"));
        set.operators.push(standby);
        assert_lease_held_by(&set, 0, LEASE).await;
        let clients = set.clients(true);
        tokio::time::sleep(Duration::from_millis(500)).await;

        let cut_wall = k8s_openapi::jiff::Timestamp::now();
        let operator_cuts: Vec<Blocked> = UIDS
            .iter()
            .map(|uid| set.t.cut_uid_off(*uid, Some(&set.pods[0].1)))
            .collect();
        let others: Vec<usize> = (1..set.pods.len()).collect();
        let cut = set.isolate(0, &others).await;
        // Timed from when the rules are in: the fence's bound counts from the partition.
        let cut_at = Instant::now();
        wait_for(
            "the leader to record the master silent",
            TIMEOUT,
            || async {
                match set.t.status("cache").await {
                    Some(s) if s.master_silent_since.is_some() => Ok(()),
                    s => Err(format!("{:?}", s.map(|s| (s.epoch, s.current_master)))),
                }
            },
        )
        .await;
        set.operators[0].kill();
        eprintln!(
            "leader-change: the leader killed {:?} after the cut",
            cut_at.elapsed()
        );
        let at_kill = set.t.status("cache").await.expect("status");
        assert_eq!(
            (at_kill.epoch, at_kill.current_master.as_deref()),
            (set.epoch, Some(set.master.as_str())),
            "the killed leader had promoted nobody: the failover is left to the standby"
        );

        let (_, new) = set
            .fail_over_then_heal("leader-change", clients, cut_at, (cut, operator_cuts))
            .await;
        let status = set.t.status("cache").await.expect("status");
        assert_eq!(status.epoch, set.epoch + 1, "one promotion, one epoch");
        assert_lease_held_by(&set, 1, LEASE).await;
        let promoted = promoted_since(&set.t, cut_wall).await;
        assert_eq!(promoted, vec![new.clone()], "instances promoted");
    }
}

/// Lets the chart's ServiceAccount (the operators' identity) hold the Lease `name` in
/// vigil-system too: the chart grants get and update on its own Lease's name only.
async fn grant_lease(t: &TestNs, name: &str) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let grant = format!("{name}-lease");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": grant},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "resourceNames": [name], "verbs": ["get", "update"]}],
    }))
    .expect("Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": grant},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": grant},
        "subjects": [{"kind": "ServiceAccount", "name": "vigil", "namespace": "vigil-system"}],
    }))
    .expect("RoleBinding");
    let created = |r: Result<_, kube::Error>, what: &str| match r {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create {what} {grant}: {e}"),
    };
    let pp = kube::api::PostParams::default();
    created(
        kube::Api::<Role>::namespaced(t.admin.clone(), "vigil-system")
            .create(&pp, &role)
            .await
            .map(|_| ()),
        "Role",
    );
    created(
        kube::Api::<RoleBinding>::namespaced(t.admin.clone(), "vigil-system")
            .create(&pp, &binding)
            .await
            .map(|_| ()),
        "RoleBinding",
    );
}

/// The Lease `name` in vigil-system is held by operator `i` of the set.
async fn assert_lease_held_by(set: &Set, i: usize, name: &str) {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(set.t.admin.clone(), "vigil-system");
    let suffix = format!("-{}", set.operators[i].pid());
    wait_for(
        &format!("operator {i} to hold the Lease {name}"),
        TIMEOUT,
        || async {
            let holder = leases
                .get(name)
                .await
                .ok()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            if holder.ends_with(&suffix) {
                Ok(())
            } else {
                Err(format!("held by {holder:?}"))
            }
        },
    )
    .await;
}

/// The instances named by `ReplicaPromoted` Events ("<pod> is now the master at ...") that
/// happened after `since` (the first master's promotion came before), once each.
async fn promoted_since(t: &TestNs, since: k8s_openapi::jiff::Timestamp) -> Vec<String> {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(t.admin.clone(), &t.name);
    let mut promoted: Vec<String> = events
        .list(&kube::api::ListParams::default().fields("regarding.name=cache"))
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ReplicaPromoted"))
        .filter(|e| e.event_time.as_ref().is_some_and(|at| at.0 >= since))
        .filter_map(|e| e.note?.split_whitespace().next().map(str::to_string))
        .collect();
    promoted.sort();
    promoted.dedup();
    promoted
}
