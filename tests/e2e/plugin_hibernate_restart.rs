//! `kubectl vigil hibernate | restart` against real sets: hibernation leaves the claims and the
//! Secret but no pod, and wakes the same master with every acknowledged key; it is refused for a
//! set without storage. A rolling restart replaces every pod (the master last, after a
//! switchover) losing no acknowledged write; a pod restart replaces that pod alone; both are
//! refused while another change is under way.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use vigil::api::FailoverKind;
use vigil::api::requests::{HIBERNATION_ANNOTATION, RESTART_ANNOTATION, RESTARTED_AT_ANNOTATION};
use vigil::labels::SWITCHOVER_ANNOTATION;

use crate::plugin::{not_found, refused};
use crate::plugin_fence::succeeds;
use crate::support::{ReadySet, TestNs};

#[tokio::test(flavor = "multi_thread")]
async fn plugin_hibernate_keeps_the_claims_and_wakes_the_same_master() {
    let mut t = TestNs::new("plugin-hibernate").await;
    t.start_operator();
    t.create_replication("cache", json!({"instances": 3, "storage": {"size": "1Gi"}}))
        .await;
    t.create_replication("plain", json!({"instances": 1})).await;
    let status = t.wait_ready("cache", 3, Duration::from_secs(180)).await;
    t.wait_ready("plain", 1, Duration::from_secs(120)).await;
    let master = status.current_master.clone().expect("a master");
    let password = t.password("cache").await;
    let master_ip = t.pod_ip(&master).await;
    let keys = t.write_acknowledged(&master_ip, &password, "before", 20);

    // Without storage the data would go with the pods: refused, nothing written.
    let message = refused(&t, &["hibernate", "plain", "on"]);
    assert!(
        message.contains("HibernationRefused") && message.contains("no spec.storage"),
        "{message}"
    );
    let plain = t.replications().get("plain").await.expect("plain");
    assert!(!plain.annotations().contains_key(HIBERNATION_ANNOTATION));
    assert_eq!(t.pod_names("plain").await.len(), 1);
    not_found(&t, &[&["hibernate", "nosuchname", "on"]]);

    let (out, err) = succeeds(&t, &["hibernate", "cache", "on", "--timeout", "4m"]);
    assert!(out.contains("hibernation requested"), "{out}");
    assert!(err.contains("hibernated: 3/3 pods stopped"), "{err}");
    assert!(t.pod_names("cache").await.is_empty(), "no pod left");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(t.admin.clone(), &t.name);
    let kept: Vec<String> = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    for i in 0..3 {
        let claim = format!("data-cache-{i}");
        assert!(kept.contains(&claim), "{claim} kept: {kept:?}");
    }
    let secrets: Api<Secret> = Api::namespaced(t.admin.clone(), &t.name);
    assert!(secrets.get_opt("cache-auth").await.expect("read").is_some());
    let now = t.status("cache").await.expect("status");
    assert_eq!(now.current_master.as_deref(), Some(master.as_str()));
    let (text, _) = succeeds(&t, &["status", "cache"]);
    assert!(text.contains("Hibernation:    Hibernated"), "{text}");
    // Nothing runs to carry out other requests; asking twice changes nothing.
    let message = refused(&t, &["restart", "cache"]);
    assert!(message.contains("hibernate cache off"), "{message}");
    let message = refused(&t, &["fence", "cache", "--all"]);
    assert!(message.contains("hibernated"), "{message}");
    let (out, _) = succeeds(&t, &["hibernate", "cache", "on"]);
    assert!(out.contains("already asked to hibernate"), "{out}");

    let (_, err) = succeeds(&t, &["hibernate", "cache", "off", "--timeout", "4m"]);
    assert!(
        err.contains(&format!("master {master} (as before)")),
        "{err}"
    );
    let now = t.wait_ready("cache", 3, Duration::from_secs(60)).await;
    assert_eq!(now.current_master.as_deref(), Some(master.as_str()));
    assert!(now.hibernation.is_none(), "{now:?}");
    let master_ip = t.pod_ip(&master).await;
    t.wait_topology("cache", &master, &password, Duration::from_secs(60))
        .await;
    for pod in t.pod_names("cache").await {
        let ip = t.pod_ip(&pod).await;
        t.assert_keys_present(&ip, &password, &keys);
    }
    assert_eq!(
        t.redis_cli(&master_ip, Some(&password), &["SET", "after", "waking"]),
        "OK"
    );
}

/// Pod name -> uid.
async fn uids(t: &TestNs) -> BTreeMap<String, String> {
    let pods = t
        .pods()
        .list(&ListParams::default().labels("redis.vigil.dev/replication=cache"))
        .await
        .expect("pods");
    pods.items
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_restart_rolls_every_instance_then_one_pod() {
    let mut t = TestNs::new("plugin-restart").await;
    let ReadySet {
        master_ip,
        password,
        ..
    } = t.ready_replication("cache", 3).await;
    let keys = t.write_acknowledged(&master_ip, &password, "before", 20);
    let before = uids(&t).await;

    not_found(&t, &[&["restart", "nosuchname"]]);
    let message = refused(&t, &["restart", "cache", "nosuchpod"]);
    assert!(
        message.contains("\"nosuchpod\" is not an instance"),
        "{message}"
    );

    // The whole set: every pod replaced, the master last after a switchover.
    let (out, err) = succeeds(&t, &["restart", "cache", "--timeout", "4m"]);
    assert!(
        out.contains("rolling restart of 3 instances requested"),
        "{out}"
    );
    assert!(err.contains("every instance restarted (3/3)"), "{err}");
    let after = uids(&t).await;
    let rr = t.replications().get("cache").await.expect("cache");
    let asked = rr.annotations().get(RESTART_ANNOTATION).cloned();
    assert!(asked.is_some(), "{:?}", rr.annotations());
    for (pod, uid) in &before {
        assert_ne!(after.get(pod), Some(uid), "{pod} replaced");
        let p = t.pods().get(pod).await.expect("pod");
        assert_eq!(
            p.annotations().get(RESTARTED_AT_ANNOTATION),
            asked.as_ref(),
            "{pod}"
        );
    }
    let now = t.wait_ready("cache", 3, Duration::from_secs(60)).await;
    let master = now.current_master.clone().expect("a master");
    let master_ip = t.pod_ip(&master).await;
    t.assert_keys_present(&master_ip, &password, &keys);
    t.wait_topology("cache", &master, &password, Duration::from_secs(30))
        .await;

    // Under way elsewhere (the operator stopped, so the requests stay pending): refused.
    t.stop_operator();
    let annotate = |key: &'static str, value: serde_json::Value| {
        let api = t.replications();
        async move {
            let patch = json!({"metadata": {"annotations": {key: value}}});
            api.patch("cache", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("annotate");
        }
    };
    annotate(SWITCHOVER_ANNOTATION, json!(master)).await;
    let message = refused(&t, &["restart", "cache"]);
    assert!(message.contains("switchover of cache"), "{message}");
    annotate(SWITCHOVER_ANNOTATION, serde_json::Value::Null).await;
    annotate(RESTART_ANNOTATION, json!("2000-01-01T00:00:00Z")).await;
    let message = refused(&t, &["restart", "cache", &master]);
    assert!(
        message.contains("rolling restart of cache is under way (3/3"),
        "{message}"
    );
    // Back to the value the pods were created under: no roll to do.
    annotate(RESTART_ANNOTATION, json!(asked)).await;
    t.start_operator();
    t.wait_ready("cache", 3, Duration::from_secs(60)).await;

    // One replica: that pod alone is replaced.
    let before = uids(&t).await;
    let replica = before
        .keys()
        .find(|p| **p != master)
        .cloned()
        .expect("a replica");
    let (_, err) = succeeds(&t, &["restart", "cache", &replica, "--timeout", "3m"]);
    assert!(err.contains(&format!("{replica} restarted (1/1)")), "{err}");
    let after = uids(&t).await;
    for (pod, uid) in &before {
        assert_eq!(
            after.get(pod) == Some(uid),
            *pod != replica,
            "{pod}: {after:?}"
        );
    }
    // The master: it hands over first, then is replaced.
    let epoch = t.status("cache").await.expect("status").epoch;
    let (_, err) = succeeds(&t, &["restart", "cache", &master, "--timeout", "3m"]);
    assert!(err.contains(&format!("{master} restarted (1/1)")), "{err}");
    let now = t.wait_ready("cache", 3, Duration::from_secs(60)).await;
    assert_ne!(
        now.current_master.as_deref(),
        Some(master.as_str()),
        "{now:?}"
    );
    assert!(now.epoch > epoch, "{now:?}");
    let last = now.last_failover.expect("the handover is recorded");
    assert_eq!(
        (last.kind, last.from.as_str()),
        (FailoverKind::Switchover, master.as_str())
    );
    let master_ip = t
        .pod_ip(now.current_master.as_deref().expect("master"))
        .await;
    t.assert_keys_present(&master_ip, &password, &keys);
}
