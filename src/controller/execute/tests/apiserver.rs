//! A stand-in apiserver for the executor's tests, on tower-test's mock service (as kube-rs's
//! controller-rs tests its reconciler): it answers every request as the apiserver would and
//! writes a summary of each to the test's timeline.

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::Timeline;
use crate::api::RedisReplication;
use crate::labels::ROLE_LABEL;

pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
    /// The replication as the apiserver holds it.
    rr: Value,
    timeline: Timeline,
    /// Status writes are refused with 409 Conflict: someone else wrote first.
    pub conflict_on_status: bool,
}

/// A client whose every request goes to the returned stand-in.
pub fn pair(rr: &RedisReplication, timeline: &Timeline) -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = ApiServer {
        handle,
        rr: serde_json::to_value(rr).expect("replication json"),
        timeline: timeline.clone(),
        conflict_on_status: false,
    };
    (Client::new(service, "default"), server)
}

impl ApiServer {
    /// Answers until every clone of the client is gone.
    pub async fn serve(mut self) {
        while let Some((request, send)) = self.handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.expect("request body");
            let body: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body).expect("a JSON request body")
            };
            let (summary, status, answer) = self.answer(&parts.method, parts.uri.path(), body);
            self.timeline.record(summary);
            let response = Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                .expect("response");
            send.send_response(response);
        }
    }

    fn answer(&mut self, method: &Method, path: &str, body: Value) -> (String, StatusCode, Value) {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
                let reason = body["reason"].as_str().unwrap_or_default();
                self.timeline
                    .note(reason, body["note"].as_str().unwrap_or_default());
                (format!("event {reason}"), StatusCode::CREATED, body)
            }
            ("PATCH", ["api", "v1", "namespaces", ns, "pods", pod]) => {
                let label = &body["metadata"]["labels"][ROLE_LABEL];
                let role = label.as_str().unwrap_or("none");
                (
                    format!("label {pod} role={role}"),
                    StatusCode::OK,
                    pod_json(ns, pod),
                )
            }
            (
                "PATCH",
                [
                    "apis",
                    "redis.vigil.dev",
                    "v1alpha1",
                    "namespaces",
                    _,
                    "redisreplications",
                    _,
                    "status",
                ],
            ) => self.patch_status(body),
            _ => (
                format!("unexpected {method} {path}"),
                StatusCode::NOT_FOUND,
                failure(404, "NotFound"),
            ),
        }
    }

    /// A merge patch of the status, guarded by the resourceVersion it names.
    fn patch_status(&mut self, patch: Value) -> (String, StatusCode, Value) {
        let status = &patch["status"];
        let summary = format!(
            "status master={} epoch={} target={}",
            status["currentMaster"].as_str().unwrap_or("-"),
            status["epoch"],
            status["targetMaster"].as_str().unwrap_or("-"),
        );
        let guard = &patch["metadata"]["resourceVersion"];
        if self.conflict_on_status
            || (!guard.is_null() && *guard != self.rr["metadata"]["resourceVersion"])
        {
            return (
                format!("{summary} refused (conflict)"),
                StatusCode::CONFLICT,
                failure(409, "Conflict"),
            );
        }
        merge(&mut self.rr["status"], status);
        let version = self.rr["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        self.rr["metadata"]["resourceVersion"] = json!((version + 1).to_string());
        (summary, StatusCode::OK, self.rr.clone())
    }
}

/// JSON merge patch (RFC 7386): objects merge, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        match (value, target.as_object_mut()) {
            (Value::Null, Some(t)) => {
                t.remove(key);
            }
            (_, Some(t)) => merge(t.entry(key.clone()).or_insert(Value::Null), value),
            (_, None) => {}
        }
    }
}

fn pod_json(ns: &str, pod: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": ns}})
}

fn failure(code: u16, reason: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
           "reason": reason, "message": reason})
}
