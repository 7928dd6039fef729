//! Runtime problems the schema cannot see become status conditions and Events, and the operator
//! keeps serving every other replication meanwhile.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::support::{TestNs, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Waits until `name` has condition `type_` with `status` and `reason`; returns its message.
async fn wait_condition(t: &TestNs, name: &str, type_: &str, status: &str, reason: &str) -> String {
    wait_for(
        &format!("{name}: condition {type_}={status} ({reason})"),
        TIMEOUT,
        || async {
            let st = t.status(name).await.ok_or("no status")?;
            match st.conditions.iter().find(|c| c.type_ == type_) {
                Some(c) if c.status == status && c.reason == reason => Ok(c.message.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Waits for a Warning Event with `reason` on `name` whose note contains `text`.
async fn wait_event(t: &TestNs, name: &str, reason: &str, text: &str) {
    let events: Api<Event> = Api::namespaced(t.admin.clone(), &t.name);
    wait_for(
        &format!("{name}: {reason} event mentioning {text:?}"),
        TIMEOUT,
        || async {
            let list = events
                .list(&ListParams::default().fields(&format!("regarding.name={name}")))
                .await
                .map_err(|e| e.to_string())?;
            let notes: Vec<String> = list
                .items
                .iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .filter_map(|e| e.note.clone())
                .collect();
            if notes.iter().any(|n| n.contains(text)) {
                Ok(())
            } else {
                Err(format!("{notes:?}"))
            }
        },
    )
    .await;
}

/// A config value Redis refuses (its pods crash-loop), a node selector no node matches and a
/// password Secret that does not exist each show up with Kubernetes' reason in the status and
/// in a Warning Event; a healthy replication created alongside them becomes Ready; creating the
/// missing Secret heals the third.
#[tokio::test(flavor = "multi_thread")]
async fn runtime_problems_become_conditions_and_events_while_others_are_served() {
    let mut t = TestNs::new("problems").await;
    t.start_operator();
    t.create_replication(
        "badconfig",
        json!({"instances": 1, "config": {"maxmemory": "plenty"}}),
    )
    .await;
    t.create_replication(
        "nowhere",
        json!({"instances": 1, "nodeSelector": {"vigil.dev/disk": "none-has-this"}}),
    )
    .await;
    t.create_replication(
        "nosecret",
        json!({"instances": 1, "auth": {"existingSecret": {"name": "absent"}}}),
    )
    .await;
    t.create_replication("good", json!({"instances": 2})).await;
    t.wait_ready("good", 2, Duration::from_secs(120)).await;

    let crash = wait_condition(
        &t,
        "badconfig",
        "InstancesHealthy",
        "False",
        "CrashLoopBackOff",
    )
    .await;
    assert!(crash.contains("badconfig-0"), "{crash}");
    wait_condition(&t, "badconfig", "Ready", "False", "CrashLoopBackOff").await;
    wait_event(&t, "badconfig", "InstanceFailing", "CrashLoopBackOff").await;

    let unschedulable =
        wait_condition(&t, "nowhere", "InstancesHealthy", "False", "Unschedulable").await;
    assert!(unschedulable.contains("selector"), "{unschedulable}");
    wait_event(&t, "nowhere", "InstanceFailing", "Unschedulable").await;

    let missing = wait_condition(&t, "nosecret", "Ready", "False", "SecretMissing").await;
    assert!(missing.contains("absent"), "{missing}");
    wait_event(&t, "nosecret", "SecretMissing", "absent").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "absent"},
        "stringData": {"password": "s3cret-enough"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(t.admin.clone(), &t.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the missing Secret");
    t.wait_ready("nosecret", 1, Duration::from_secs(120)).await;
    let ip = t.pod_ip("nosecret-0").await;
    assert_eq!(t.redis_cli(&ip, Some("s3cret-enough"), &["PING"]), "PONG");
}
