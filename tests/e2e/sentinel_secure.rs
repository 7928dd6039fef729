//! A secure Sentinel endpoint: TLS on the Sentinel port (as Sentinel's `tls-port`) and a
//! password that is asked for before anything else, PING included, checked with redis-cli and
//! redis-py; and the chart's values for both, which mount Secrets rather than set environment
//! values, and which the schema and the apiserver accept.

use std::process::Command;
use std::time::Duration;

use crate::chart::{CHART, helm, object, render, sequence, strings, text};
use crate::support::clients::{ClientProcess, Library};
use crate::support::{OperatorOptions, TestNs, wait_for};

const PASSWORD: &str = "s3ntinel";
/// A throwaway CA and a certificate signed by it (tests/fixtures/tls).
const TLS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

/// redis-cli against the endpoint on `port`: its stdout and stderr, trimmed.
fn cli(t: &TestNs, port: u16, options: &[&str], args: &[&str]) -> String {
    let out = Command::new(&t.env.redis_cli)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--no-auth-warning",
        ])
        .args(options)
        .args(args)
        .output()
        .expect("run redis-cli");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_serves_tls_and_asks_for_the_password_first() {
    let mut t = TestNs::new("disc-tls").await;
    let set = t.ready_replication("cache", 3).await;
    let name = format!("{}.cache", t.name);
    let password_file = t
        .env
        .artifacts
        .join(format!("{}-sentinel-password", t.name));
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
    // A second replica, serving discovery only, with TLS and the password.
    let secure = t.spawn_operator(OperatorOptions {
        tag: Some("secure"),
        args: vec![
            "--sentinel-only=true".into(),
            format!("--sentinel-password-file={}", password_file.display()),
            format!("--sentinel-tls-dir={TLS_DIR}"),
            "--sentinel-tls-auth-clients=optional".into(),
        ],
        ..OperatorOptions::default()
    });
    let port = secure.sentinel_port;
    let ca = format!("{TLS_DIR}/ca.crt");
    let tls = ["--tls", "--cacert", ca.as_str()];
    let authed = [&tls[..], &["-a", PASSWORD]].concat();
    let expected = format!("{}\n6379", set.master_ip);
    wait_for(
        "the TLS endpoint to answer",
        Duration::from_secs(30),
        || {
            let got = cli(
                &t,
                port,
                &authed,
                &["SENTINEL", "get-master-addr-by-name", &name],
            );
            let want = expected.clone();
            async move { if got == want { Ok(()) } else { Err(got) } }
        },
    )
    .await;

    assert_eq!(
        cli(&t, port, &tls, &["PING"]),
        "NOAUTH Authentication required.",
        "PING waits for AUTH, as in Redis"
    );
    assert_eq!(
        cli(&t, port, &tls, &["SENTINEL", "masters"]),
        "NOAUTH Authentication required."
    );
    let wrong = cli(&t, port, &[&tls[..], &["-a", "wrong"]].concat(), &["PING"]);
    assert!(
        wrong.contains("WRONGPASS invalid username-password pair or user is disabled."),
        "{wrong}"
    );
    assert_eq!(cli(&t, port, &authed, &["PING"]), "PONG");
    // With a client certificate too (verified against ca.crt).
    let cert = format!("{TLS_DIR}/tls.crt");
    let key = format!("{TLS_DIR}/tls.key");
    let with_cert = [
        &authed[..],
        &["--cert", cert.as_str(), "--key", key.as_str()],
    ]
    .concat();
    assert_eq!(cli(&t, port, &with_cert, &["PING"]), "PONG");
    // Plain text gets no answer on a TLS port.
    let plain = cli(&t, port, &["-a", PASSWORD], &["PING"]);
    assert!(!plain.contains("PONG"), "plain text is not served: {plain}");

    // redis-py finds the master through the TLS endpoint with the password and writes there.
    let mut writer = Library::RedisPy.command(port, &name, &set.password, "write");
    writer.args(["--sentinel-password", PASSWORD, "--sentinel-ca", &ca]);
    let writer = ClientProcess::spawn(&t, "tls-writer", writer);
    let on_master = format!(" {}:6379", set.master_ip);
    writer
        .wait_lines(
            "writes on the master, found over TLS",
            Duration::from_secs(30),
            10,
            |l| l.starts_with("ok ") && l.ends_with(&on_master),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_mounts_the_sentinel_password_and_tls_secrets() {
    let t = TestNs::new("chart-sentinel").await;
    let values = [
        "--set",
        "sentinel.auth.existingSecret=sentinel-auth",
        "--set",
        "sentinel.auth.key=pw",
        "--set",
        "sentinel.tls.enabled=true",
        "--set",
        "sentinel.tls.secretName=sentinel-tls",
        "--set",
        "sentinel.tls.authClients=optional",
    ];
    let lint = helm(&t, &[&["lint", "--strict", CHART][..], &values].concat());
    assert!(
        lint.status.success(),
        "helm lint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let (manifest, docs) = render(&t, &values);
    let pod = &object(&docs, "Deployment", "vigil")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    for arg in [
        "--sentinel-password-file=/etc/vigil/sentinel-auth/pw",
        "--sentinel-tls-dir=/etc/vigil/sentinel-tls",
        "--sentinel-tls-auth-clients=optional",
    ] {
        assert!(args.contains(&arg), "{arg} in {args:?}");
    }
    let env: Vec<&str> = sequence(&container["env"])
        .iter()
        .map(|e| text(&e["name"]))
        .collect();
    assert!(
        env.iter().all(|e| !e.contains("PASSWORD")),
        "no password in the environment: {env:?}"
    );
    let mounts: Vec<(&str, &str, bool)> = sequence(&container["volumeMounts"])
        .iter()
        .map(|m| {
            (
                text(&m["name"]),
                text(&m["mountPath"]),
                m["readOnly"].as_bool() == Some(true),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("sentinel-auth", "/etc/vigil/sentinel-auth", true),
            ("sentinel-tls", "/etc/vigil/sentinel-tls", true)
        ]
    );
    let secrets: Vec<(&str, &str)> = sequence(&pod["volumes"])
        .iter()
        .map(|v| (text(&v["name"]), text(&v["secret"]["secretName"])))
        .collect();
    assert_eq!(
        secrets,
        [
            ("sentinel-auth", "sentinel-auth"),
            ("sentinel-tls", "sentinel-tls")
        ]
    );

    // Nothing of it by default.
    let (_, defaults) = render(&t, &[]);
    let pod = &object(&defaults, "Deployment", "vigil")["spec"]["template"]["spec"];
    assert!(pod["volumes"].is_null(), "{:?}", pod["volumes"]);
    assert!(
        strings(&pod["containers"][0]["args"])
            .iter()
            .all(|a| !a.starts_with("--sentinel-")),
        "no Sentinel options by default"
    );

    // The schema refuses what the operator would refuse at start.
    for bad in [
        &["--set", "sentinel.tls.enabled=true"][..],
        &[
            "--set",
            "sentinel.tls.secretName=x",
            "--set",
            "sentinel.tls.authClients=maybe",
        ],
        &["--set", "sentinel.auth.key=a/b"],
        &["--set", "sentinel.auth.secret=x"],
    ] {
        let out = helm(&t, &[&["template", "vigil", CHART][..], bad].concat());
        assert!(!out.status.success(), "the schema rejects {bad:?}");
    }

    // And the apiserver takes the rendered objects.
    let path = t
        .env
        .artifacts
        .join(format!("{}-chart-sentinel.yaml", t.name));
    std::fs::write(&path, &manifest).expect("write manifest");
    let (passed, out) = t.server_dry_run(&path);
    assert!(passed, "server-side dry run: {out}");
    assert!(out.contains("deployment.apps/vigil"), "{out}");
}
