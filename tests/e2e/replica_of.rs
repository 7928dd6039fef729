//! Disaster recovery (`spec.replicaOf`): a set in one namespace follows a set in another through
//! a password-protected Sentinel endpoint of the source's operator, with the source's password
//! from a Secret of its own.
//! It is read-only while it follows, follows the source through a failover, and once
//! `replicaOf` is removed it is writable with every key the source had acknowledged. With TLS,
//! a set follows a fixed address over TLS, its certificates from the source's issuer.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use vigil::api::{LinkStatus, Phase, RedisReplicationStatus};

use crate::support::{Chaos, OperatorOptions, TestNs, wait_for};
use crate::tls::{Certificates, tls_cli};

const FOLLOW_TIMEOUT: Duration = Duration::from_secs(120);
const SENTINEL_PASSWORD: &str = "discovery-pw";

/// Waits until `name` follows `source` (`ip:port`, any when `None`) with its link up, every
/// instance ready.
async fn wait_following(t: &TestNs, name: &str, source: Option<&str>) -> RedisReplicationStatus {
    wait_for(
        &format!("{name} to follow {}", source.unwrap_or("its source")),
        FOLLOW_TIMEOUT,
        || async {
            let status = t.status(name).await.ok_or("no status")?;
            let link = status.replica_of.as_ref().ok_or("no status.replicaOf")?;
            let at = link.source.as_deref();
            if status.phase == Some(Phase::Following)
                && link.link == LinkStatus::Up
                && (source.is_none() || at == source)
            {
                Ok(status)
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await
}

/// The Secret `name` in `t`'s namespace, holding `password` under `password`.
async fn secret(t: &TestNs, name: &str, password: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"password": password},
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(t.admin.clone(), &t.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("create the Secret {name}: {e}"));
}

async fn promote(t: &TestNs, name: &str) {
    t.replications()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicaOf": null}})),
        )
        .await
        .expect("remove spec.replicaOf");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dr_set_follows_its_source_through_a_failover_and_is_promoted_with_every_key() {
    let mut src = TestNs::new("dr-src").await;
    src.start_operator();
    let source = src.create_ready("src", json!({"instances": 3})).await;
    let before = src.write_acknowledged(&source.master_ip, &source.password, "before", 50);

    // The DR set has a password of its own; the source's comes from a Secret of its namespace.
    let mut dr = TestNs::new("dr").await;
    secret(&dr, "source-auth", &source.password).await;
    // The source's discovery, as a platform team runs it: a discovery-only operator replica
    // whose Sentinel endpoint asks for a password, which the DR namespace holds too.
    let discovery = src.spawn_operator(OperatorOptions {
        tag: Some("discovery"),
        args: vec![
            "--sentinel-only=true".into(),
            format!("--sentinel-password={SENTINEL_PASSWORD}"),
        ],
        ..OperatorOptions::default()
    });
    secret(&dr, "sentinel-auth", SENTINEL_PASSWORD).await;
    dr.start_operator();
    let replica_of = json!({
        "sentinel": {
            "host": "127.0.0.1",
            "port": discovery.sentinel_port,
            "masterName": format!("{}.src", src.name),
            "passwordSecret": {"name": "sentinel-auth"},
        },
        "passwordSecret": {"name": "source-auth"},
    });
    let set = dr
        .create_ready("dr", json!({"instances": 2, "replicaOf": replica_of}))
        .await;
    assert_ne!(
        set.password, source.password,
        "the DR set has its own password"
    );
    let source_at = format!("{}:6379", source.master_ip);
    let status = wait_following(&dr, "dr", Some(&source_at)).await;
    let designated = status.current_master.clone().expect("a designated master");
    let designated_ip = dr.pod_ip(&designated).await;
    let replica = status
        .instances
        .iter()
        .find(|i| i.name != designated)
        .expect("a second instance");
    let replica_ip = dr.pod_ip(&replica.name).await;
    dr.assert_keys_present(&designated_ip, &set.password, &before);
    dr.assert_keys_present(&replica_ip, &set.password, &before);
    let refused = dr.redis_cli(
        &designated_ip,
        Some(&set.password),
        &["SET", "dr:write", "1"],
    );
    assert!(
        refused.contains("READONLY"),
        "a following set refuses writes: {refused}"
    );
    assert!(
        dr.event_reasons("dr")
            .await
            .iter()
            .any(|r| r == "FollowingSource"),
        "an Event says the designated master follows the source"
    );

    // The source fails over; the DR set follows its new master.
    src.chaos(&source.master, Chaos::Crash);
    let failed_over = src
        .wait_new_master("src", &source.master, source.status.epoch, FOLLOW_TIMEOUT)
        .await;
    let new_master = failed_over.current_master.expect("a new master");
    let new_ip = src.pod_ip(&new_master).await;
    let after = src.write_acknowledged(&new_ip, &source.password, "after", 50);
    let status = wait_following(&dr, "dr", Some(&format!("{new_ip}:6379"))).await;
    assert_eq!(
        status.current_master.as_deref(),
        Some(designated.as_str()),
        "the designated master stays; only its source moved"
    );
    let source_offset: i64 = src
        .info_field(&new_ip, &source.password, "master_repl_offset")
        .and_then(|o| o.parse().ok())
        .expect("the source's offset");
    wait_for(
        "the DR set to hold the source's stream",
        FOLLOW_TIMEOUT,
        || async {
            let at: i64 = dr
                .info_field(&designated_ip, &set.password, "master_repl_offset")
                .and_then(|o| o.parse().ok())
                .ok_or("no offset")?;
            (at >= source_offset)
                .then_some(())
                .ok_or(format!("{at} < {source_offset}"))
        },
    )
    .await;

    // Promote: remove replicaOf. The designated master becomes writable, nothing lost.
    promote(&dr, "dr").await;
    let promoted = dr.wait_ready("dr", 2, FOLLOW_TIMEOUT).await;
    assert_eq!(promoted.phase, Some(Phase::Ready));
    assert_eq!(
        promoted.current_master.as_deref(),
        Some(designated.as_str())
    );
    assert_eq!(
        promoted.replica_of, None,
        "status.replicaOf is gone once promoted"
    );
    assert!(
        promoted.epoch > status.epoch,
        "the promotion is a new epoch: {} then {}",
        status.epoch,
        promoted.epoch
    );
    for keys in [&before, &after] {
        dr.assert_keys_present(&designated_ip, &set.password, keys);
    }
    let own = dr.write_acknowledged(&designated_ip, &set.password, "promoted", 10);
    dr.assert_keys_present(&replica_ip, &set.password, &own);

    // A running set cannot start following: that would replace its data.
    let refused = src
        .replications()
        .patch(
            "src",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicaOf": {"master": {"host": designated_ip}}}})),
        )
        .await
        .expect_err("adding replicaOf to a running set is refused");
    assert!(
        refused
            .to_string()
            .contains("can only be given when a RedisReplication is created"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_dr_set_follows_a_fixed_address_over_tls_and_is_promoted() {
    let mut src = TestNs::new("drtls-src").await;
    let issuer = Certificates::issue(&src, "src", "src-tls", None).await;
    src.start_operator();
    let tls = |secret: &str| json!({"secretName": secret});
    let source = src
        .create_ready("src", json!({"instances": 2, "tls": tls("src-tls")}))
        .await;
    let ca = issuer.ca();
    let cli =
        |t: &TestNs, password: &str, ip: &str, args: &[&str]| tls_cli(t, &ca, password, ip, args);
    let set = cli(
        &src,
        &source.password,
        &source.master_ip,
        &["SET", "tls:key", "v"],
    );
    assert_eq!(set, "OK");

    let mut dr = TestNs::new("drtls").await;
    Certificates::issue(&dr, "dr", "dr-tls", Some(&issuer)).await;
    secret(&dr, "source-auth", &source.password).await;
    dr.start_operator();
    let spec = json!({"instances": 2, "tls": tls("dr-tls"), "replicaOf": {
        "master": {"host": source.master_ip},
        "passwordSecret": {"name": "source-auth"},
    }});
    let set = dr.create_ready("dr", spec).await;
    let source_at = format!("{}:6379", source.master_ip);
    let status = wait_following(&dr, "dr", Some(&source_at)).await;
    let designated = status.current_master.clone().expect("a designated master");
    let designated_ip = dr.pod_ip(&designated).await;
    for i in &status.instances {
        let ip = dr.pod_ip(&i.name).await;
        let got = cli(&dr, &set.password, &ip, &["GET", "tls:key"]);
        assert_eq!(got, "v", "{} holds the source's key, over TLS", i.name);
    }

    promote(&dr, "dr").await;
    let promoted = dr.wait_ready("dr", 2, FOLLOW_TIMEOUT).await;
    assert_eq!(
        promoted.current_master.as_deref(),
        Some(designated.as_str())
    );
    let write = cli(&dr, &set.password, &designated_ip, &["SET", "dr:key", "w"]);
    assert_eq!(write, "OK", "the promoted set takes writes");
    let acked = cli(&dr, &set.password, &designated_ip, &["WAIT", "1", "5000"]);
    assert_eq!(acked, "1", "its replica follows it over TLS");
}
