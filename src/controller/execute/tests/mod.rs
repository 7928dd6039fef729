//! The executor against a stand-in apiserver (tower-test's mock service) and stand-in Redis
//! instances: one test per safety rule the executor carries, each asserting the order of what it
//! actually sends, so a change of that order fails here.

mod apiserver;
mod follow;
mod instances;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;

use super::{Target, execute};
use crate::api::{RedisReplication, RedisReplicationStatus};
use crate::controller::plan::fixtures::{addr, down_master, input, inst, recorded};
use crate::controller::plan::{self, ObservedInstance, PlanInput};
use crate::controller::{Context, Error, events};
use crate::labels::RoleLabel;
use crate::metrics::Metrics;
use crate::monitor::{self, Monitor};
use crate::redis::{Address, Credentials};
use instances::{Fake, Instances};

/// Everything the stand-ins saw, in the order they saw it, and the notes of the Events.
#[derive(Clone, Default)]
struct Timeline {
    entries: Arc<Mutex<Vec<String>>>,
    notes: Arc<Mutex<Vec<String>>>,
}

impl Timeline {
    fn record(&self, entry: String) {
        self.entries.lock().expect("timeline").push(entry);
    }

    fn note(&self, reason: &str, note: &str) {
        self.notes
            .lock()
            .expect("notes")
            .push(format!("{reason}: {note}"));
    }

    fn entries(&self) -> Vec<String> {
        self.entries.lock().expect("timeline").clone()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("notes").clone()
    }
}

/// Stand-in instances: pod, its address, what it is.
type Fakes = Vec<(&'static str, Address, Fake)>;

/// What a run of the executor sent, and what it returned.
struct Outcome {
    result: Result<RedisReplication, Error>,
    timeline: Vec<String>,
    notes: Vec<String>,
    instances: Instances,
}

/// Plans `input` for `rr` and executes the plan against stand-ins of `fakes`.
async fn execute_plan(
    rr: &RedisReplication,
    input: &PlanInput,
    fakes: Fakes,
    conflict_on_status: bool,
) -> Outcome {
    execute_plan_with(rr, input, fakes, conflict_on_status, None).await
}

/// As `execute_plan`, for a set following an external master with this password of its own.
async fn execute_plan_with(
    rr: &RedisReplication,
    input: &PlanInput,
    fakes: Fakes,
    conflict_on_status: bool,
    source_password: Option<&str>,
) -> Outcome {
    let timeline = Timeline::default();
    let instances = Instances::start(&timeline, fakes).await;
    let (client, mut server) = apiserver::pair(rr, &timeline);
    server.conflict_on_status = conflict_on_status;
    let server = tokio::spawn(server.serve());
    let ctx = Context {
        events: events::Publisher::new(client.clone(), "vigil-operator", "test"),
        client,
        // Short: an instance without a stand-in is not waited for long.
        probe_timeout: Duration::from_millis(300),
        probe_interval: Duration::from_secs(1),
        failover_cooldown: Duration::from_secs(30),
        operator_namespace: "vigil-system".into(),
        metrics: Metrics::new(),
        pods: Arc::default(),
        monitor: Monitor::new(
            monitor::Settings {
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(300),
            },
            Metrics::new(),
        )
        .0,
        redirects: instances.redirects.clone(),
        drifted: Arc::default(),
        memory: Mutex::default(),
    };
    let plan = plan::plan(input);
    let credentials = Credentials::default();
    let target = Target {
        rr,
        namespace: "shop",
        instances: &input.instances,
        credentials: &credentials,
        source_password,
    };
    let result = execute(&ctx, &target, &plan).await;
    // The stand-in apiserver stops once the last client is gone.
    drop(ctx);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the apiserver stand-in stops")
        .expect("the apiserver stand-in did not panic");
    Outcome {
        result,
        timeline: timeline.entries(),
        notes: timeline.notes(),
        instances,
    }
}

/// `shop/cache` as last written, with `master` recorded at `epoch`.
fn replication(master: u32, epoch: i64) -> RedisReplication {
    let mut rr = crate::resources::fixtures::replication(serde_json::json!({"instances": 3}));
    rr.metadata.resource_version = Some("7".into());
    let roles = recorded(master, epoch);
    rr.status = Some(RedisReplicationStatus {
        current_master: roles.current_master,
        master_address: roles.master_address,
        epoch,
        ..RedisReplicationStatus::default()
    });
    rr
}

/// The instances as the monitor would have observed the stand-ins (no stand-in: it does not
/// answer), with their pods' role labels.
fn observed(fakes: &Fakes, pods: &[(u32, Option<RoleLabel>)]) -> Vec<ObservedInstance> {
    pods.iter()
        .map(|&(ordinal, label)| {
            let name = format!("cache-{ordinal}");
            let fake = fakes.iter().find(|(pod, ..)| *pod == name);
            inst(ordinal, fake.and_then(|(.., f)| f.observed()), label)
        })
        .collect()
}

/// cache-0, the master at epoch 4, has crashed; cache-1 has the most data.
fn crashed_master() -> (RedisReplication, PlanInput, Fakes) {
    let fakes = vec![
        (
            "cache-1",
            addr(1),
            Fake::replica(&addr(0), "history-a", 900),
        ),
        (
            "cache-2",
            addr(2),
            Fake::replica(&addr(0), "history-a", 800),
        ),
    ];
    let pods = [
        (0, Some(RoleLabel::Master)),
        (1, Some(RoleLabel::Replica)),
        (2, Some(RoleLabel::Replica)),
    ];
    let mut input = down_master(Duration::from_millis(100), observed(&fakes, &pods));
    input.instances[0].stopped = Some("container redis terminated (Error, exit code 137)".into());
    (replication(0, 4), input, fakes)
}

fn position(timeline: &[String], entry: &str) -> usize {
    timeline
        .iter()
        .position(|e| e == entry)
        .unwrap_or_else(|| panic!("{entry:?} was not sent: {timeline:#?}"))
}

/// The role change Sentinel sends: in one transaction with the client kills (rule 6).
fn role_change(pod: &str, replicaof: &str) -> Vec<String> {
    [
        "MULTI",
        replicaof,
        "CLIENT KILL TYPE normal SKIPME yes",
        "CLIENT KILL TYPE pubsub SKIPME yes",
        "EXEC",
    ]
    .iter()
    .map(|c| format!("{pod}: {c}"))
    .collect()
}

/// The parts of an expected timeline, in order.
fn sequence(parts: &[&[String]]) -> Vec<String> {
    parts.concat()
}

fn one(entry: &str) -> Vec<String> {
    vec![entry.to_string()]
}

#[tokio::test]
async fn rule_1_the_failed_master_loses_its_label_before_a_replica_is_promoted() {
    let (rr, input, fakes) = crashed_master();
    let run = execute_plan(&rr, &input, fakes, false).await;
    run.result.expect("the failover runs");
    let sent = &run.timeline;
    assert_eq!(
        *sent,
        sequence(&[
            &one("label cache-0 role=none"),
            &one("event InstanceFenced"),
            &one("status master=cache-1 epoch=5 target=cache-1"),
            &one("event FailoverStarted"),
            &role_change("cache-1", "REPLICAOF NO ONE"),
            &one("cache-1: INFO replication"),
            &one("event ReplicaPromoted"),
            &one("label cache-1 role=master"),
            &role_change("cache-2", "REPLICAOF 10.244.0.11 6379"),
            &one("event ReplicasReconfigured"),
            &one("event FailoverCompleted"),
        ]),
        "{sent:#?}"
    );
    let unlabelled = position(sent, "label cache-0 role=none");
    let promoted = position(sent, "cache-1: REPLICAOF NO ONE");
    let labelled = position(sent, "label cache-1 role=master");
    assert!(
        unlabelled < promoted && promoted < labelled,
        "at most one pod carries the master label, the recorded master: {sent:#?}"
    );
    assert_eq!(run.instances.fake("cache-1").following, None);
    assert_eq!(run.instances.fake("cache-2").following, Some(addr(1)));
}

#[tokio::test]
async fn rule_5_the_intent_is_recorded_before_any_instance_is_touched() {
    let (rr, input, fakes) = crashed_master();
    let run = execute_plan(&rr, &input, fakes.clone(), false).await;
    let written = run.result.expect("the failover runs");
    let sent = &run.timeline;
    let intent = position(sent, "status master=cache-1 epoch=5 target=cache-1");
    let first_command = sent
        .iter()
        .position(|e| e.starts_with("cache-"))
        .expect("instances were touched");
    assert!(intent < first_command, "{sent:#?}");
    // What the executor returns is the replication as written, whose version guards the
    // final status write.
    assert_eq!(written.resource_version().as_deref(), Some("8"));
    let status = written.status.expect("status");
    assert_eq!(status.epoch, 5);
    assert_eq!(status.target_master.as_deref(), Some("cache-1"));

    // Someone else wrote first: the intent is refused, and no instance is touched.
    let refused = execute_plan(&rr, &input, fakes, true).await;
    assert!(
        matches!(refused.result, Err(Error::StatusConflict(_))),
        "{:?}",
        refused.result.map(|_| ())
    );
    assert_eq!(
        refused.timeline,
        [
            "label cache-0 role=none",
            "event InstanceFenced",
            "status master=cache-1 epoch=5 target=cache-1 refused (conflict)",
        ],
        "{:#?}",
        refused.timeline
    );
    assert_eq!(
        refused.instances.fake("cache-1").following,
        Some(addr(0)),
        "not promoted"
    );
}

#[tokio::test]
async fn rule_6_a_returning_old_master_is_demoted_before_it_is_labelled_for_traffic() {
    // cache-1 was promoted at epoch 5 from cache-0's history at offset 1000; cache-0 comes back
    // as a master, still labelled, with 500 bytes of writes cache-1 never received.
    let mut new_master = Fake::master("history-b", 1200);
    new_master.previous = Some(("history-a".into(), 1001));
    let fakes = vec![
        ("cache-0", addr(0), Fake::master("history-a", 1500)),
        ("cache-1", addr(1), new_master),
        (
            "cache-2",
            addr(2),
            Fake::replica(&addr(1), "history-b", 1200),
        ),
    ];
    let pods = [
        (0, Some(RoleLabel::Master)),
        (1, Some(RoleLabel::Master)),
        (2, Some(RoleLabel::Replica)),
    ];
    let rr = replication(1, 5);
    let input = input(3, recorded(1, 5), observed(&fakes, &pods));
    let run = execute_plan(&rr, &input, fakes, false).await;
    run.result.expect("the rejoin runs");
    let sent = &run.timeline;
    assert_eq!(
        *sent,
        sequence(&[
            &one("label cache-0 role=none"),
            &role_change("cache-0", "REPLICAOF 10.244.0.11 6379"),
            &one("cache-1: INFO replication"),
            &one("event InstanceRejoined"),
            &one("label cache-0 role=replica"),
            &one("event ReplicasReconfigured"),
        ]),
        "{sent:#?}"
    );
    assert!(
        position(sent, "cache-0: EXEC") < position(sent, "label cache-0 role=replica"),
        "demoted before it is labelled for traffic: {sent:#?}"
    );
    assert!(!sent.contains(&"label cache-0 role=master".to_string()));
    let rejoined = run
        .notes
        .iter()
        .find(|n| n.starts_with("InstanceRejoined"))
        .expect("InstanceRejoined");
    assert!(
        rejoined.contains("500 bytes of its replication stream that cache-1 never received"),
        "the writes it took while cut off are counted: {rejoined}"
    );
    assert_eq!(run.instances.fake("cache-0").following, Some(addr(1)));
}

/// Fencing by request, as rule 1 orders a failover: the instance leaves the Services before its
/// role changes, and the change closes its clients in the same transaction (rule 6); nothing
/// else is touched, and the master stays where it is.
#[tokio::test]
async fn fencing_takes_the_label_off_before_the_instance_follows_nobody() {
    let fakes = vec![
        ("cache-0", addr(0), Fake::master("history-a", 1000)),
        (
            "cache-1",
            addr(1),
            Fake::replica(&addr(0), "history-a", 1000),
        ),
        (
            "cache-2",
            addr(2),
            Fake::replica(&addr(0), "history-a", 1000),
        ),
    ];
    let pods = [
        (0, Some(RoleLabel::Master)),
        (1, Some(RoleLabel::Replica)),
        (2, Some(RoleLabel::Replica)),
    ];
    let rr = replication(0, 4);
    let mut input = input(3, recorded(0, 4), observed(&fakes, &pods));
    input.fencing = crate::api::requests::Fencing::parse("[\"cache-1\"]").expect("fencing");
    let run = execute_plan(&rr, &input, fakes, false).await;
    run.result.expect("the fence runs");
    assert_eq!(
        run.timeline,
        sequence(&[
            &one("label cache-1 role=none"),
            &role_change("cache-1", "REPLICAOF 127.0.0.1 1"),
        ]),
        "{:#?}",
        run.timeline
    );
    assert_eq!(
        run.instances.fake("cache-1").following,
        Some(Address::new("127.0.0.1", 1))
    );
    assert_eq!(run.instances.fake("cache-0").following, None);
}
