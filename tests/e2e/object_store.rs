//! The object store of the backup tests (support::s3): a real versitygw that the stock AWS CLI
//! writes, lists and reads, whose stored objects a test can corrupt, and that pods reach.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{LogParams, PostParams};
use serde_json::json;

use crate::support::s3::ObjectStore;
use crate::support::{TestNs, skipped_on_kind, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn the_object_store_serves_the_stock_client_and_the_pods() {
    if skipped_on_kind("the object store listens on the local real node's IP") {
        return;
    }
    let t = TestNs::new("s3").await;
    let store = ObjectStore::start(&t).await;

    // 3 MiB of varied bytes: a single PUT (the CLI's multipart starts above 8 MB).
    let content: Vec<u8> = (0u32..3 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = t.env.artifacts.join(format!("{}-upload.bin", t.name));
    std::fs::write(&local, &content).expect("write the file to upload");
    let took = store.aws_cp_upload(&local, "dir/a.bin");
    eprintln!(
        "aws s3 cp of {} bytes to {}: {took:?}",
        content.len(),
        store.endpoint()
    );
    std::fs::remove_file(&local).expect("remove the uploaded file");

    assert_eq!(
        store.list("dir/"),
        vec![("dir/a.bin".to_string(), content.len() as u64)]
    );
    assert_eq!(store.list("other/"), vec![], "nothing under another prefix");
    assert!(store.get("dir/a.bin") == content, "read back equal");
    assert!(
        store.stored("dir/a.bin") == content,
        "the posix backend keeps the object as the file <root>/<bucket>/<key>"
    );

    store.corrupt("dir/a.bin");
    let stored = store.stored("dir/a.bin");
    assert_eq!(stored.len(), content.len(), "corrupted in place");
    assert!(stored != content, "the stored bytes differ");
    // Through S3, the stock client refuses it: it sent a CRC32 with the upload, the store kept
    // it and returns it, and the bytes no longer match.
    let refused = store
        .try_get("dir/a.bin")
        .expect_err("the AWS CLI refuses the corrupted object");
    assert!(
        refused.contains("checksum"),
        "refused for its checksum: {refused}"
    );
    assert_eq!(
        store.list("dir/"),
        vec![("dir/a.bin".to_string(), content.len() as u64)],
        "listed as before: only a content check finds the corruption"
    );

    // The credentials Secret a backup names.
    store.create_credentials_secret(&t, "s3-credentials").await;
    let secret = t
        .kubectl(&[
            "get",
            "secret",
            "s3-credentials",
            "-n",
            &t.name,
            "-o",
            "go-template={{.data.ACCESS_KEY_ID | base64decode}}:{{.data.ACCESS_SECRET_KEY | base64decode}}",
        ])
        .stdout;
    assert!(
        String::from_utf8_lossy(&secret)
            == format!("{}:{}", store.access_key(), store.secret_key()),
        "the Secret holds the store's credentials"
    );
    let head = store.aws(&["s3api", "head-bucket", "--bucket", store.bucket()]);
    assert!(
        head.status.success(),
        "{}",
        String::from_utf8_lossy(&head.stderr)
    );
    let requests = std::fs::read_to_string(store.log_path()).expect("the store's log");
    assert!(
        requests.contains("dir/a.bin"),
        "the store's access log names the requests: {requests}"
    );

    let line = status_line_from_a_pod(&t, &store.endpoint()).await;
    eprintln!("a pod's GET / to {}: {line}", store.endpoint());
    assert!(
        line.starts_with("HTTP/1.1 "),
        "a pod reaches {}: {line:?}",
        store.endpoint()
    );
}

/// Runs a pod of the project's server image (Debian, with bash) that sends `GET /` to
/// `endpoint` over bash's /dev/tcp and prints the answer's status line; returns that line.
async fn status_line_from_a_pod(t: &TestNs, endpoint: &str) -> String {
    let hostport = endpoint.trim_start_matches("http://");
    let (host, port) = hostport.split_once(':').expect("http://IP:PORT");
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port} && \
         printf 'GET / HTTP/1.1\\r\\nHost: {hostport}\\r\\nConnection: close\\r\\n\\r\\n' >&3 && \
         head -n 1 <&3"
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "s3-reach"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 999, "runAsGroup": 999,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "check",
                "image": vigil::api::DEFAULT_IMAGE,
                "command": ["timeout", "10", "bash", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }))
    .expect("pod");
    t.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create the pod that reaches the store");
    let phase = wait_for(
        "pod s3-reach to finish",
        Duration::from_secs(60),
        || async {
            let pod = t.pods().get("s3-reach").await.map_err(|e| e.to_string())?;
            match pod.status.as_ref().and_then(|s| s.phase.clone()) {
                Some(p) if p == "Succeeded" || p == "Failed" => Ok(p),
                phase => Err(format!("phase {phase:?}")),
            }
        },
    )
    .await;
    let logs = t
        .pods()
        .logs("s3-reach", &LogParams::default())
        .await
        .expect("logs of pod s3-reach");
    assert_eq!(phase, "Succeeded", "pod s3-reach; its output: {logs}");
    logs.trim().to_string()
}
