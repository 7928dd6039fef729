//! What every request verb shares: the instance pods, the checks that refuse a request while
//! another change is under way, and the annotation edit itself.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Map, Value, json};

use super::{Error, Session};
use crate::api::RedisReplication;
use crate::api::requests::{HIBERNATION_ANNOTATION, parse_hibernation};
use crate::labels::REPLICATION_LABEL;

/// How often an edit is retried after a conflict. The operator writes the status, which bumps
/// the object's resourceVersion, several times a second while something changes; a conditional
/// patch then conflicts though nobody touched the annotations.
const CONFLICT_RETRIES: usize = 8;

/// The replication's instance pods.
pub async fn pods(session: &Session, name: &str) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(session.client.clone(), &session.namespace);
    let lp = ListParams::default().labels(&format!("{REPLICATION_LABEL}={name}"));
    api.list(&lp)
        .await
        .map(|l| l.items)
        .map_err(|e| Error::api(format!("listing the pods of {name}"), e))
}

/// What an edit decided: the annotations to merge (a `null` removes one; none: nothing to
/// change, and the command still succeeds and waits, as `kubectl apply` says "unchanged"),
/// what to tell the user, and what the verb needs to wait for the outcome.
pub struct Edit<T> {
    pub annotations: Option<Map<String, Value>>,
    pub say: String,
    pub value: T,
}

/// Decides on the current object and merges the annotations `decide` returns, conditional on
/// the resourceVersion it decided on: an edit made meanwhile (another fencing request, say) is
/// decided on again rather than overwritten. Returns what `decide` returned.
pub async fn annotate<T>(
    session: &Session,
    name: &str,
    mut decide: impl FnMut(&RedisReplication) -> Result<Edit<T>, Error>,
) -> Result<T, Error> {
    for _ in 0..CONFLICT_RETRIES {
        let rr = session.replication(name).await?;
        let Edit {
            annotations,
            say,
            value,
        } = decide(&rr)?;
        let Some(annotations) = annotations else {
            println!("redisreplication/{name}: {say}");
            return Ok(value);
        };
        let patch = json!({"metadata": {
            "resourceVersion": rr.resource_version(),
            "annotations": annotations,
        }});
        match session
            .replications()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                println!("redisreplication/{name}: {say}");
                return Ok(value);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(Error::api(
                    format!("annotating redisreplication {}/{name}", session.namespace),
                    e,
                ));
            }
        }
    }
    Err(Error::Refused(format!(
        "redisreplication {name} kept changing while the request was written; look at \
         `kubectl vigil status {name}` and try again"
    )))
}

/// One annotation to merge.
pub fn set(key: &str, value: Option<String>) -> Map<String, Value> {
    Map::from_iter([(key.to_string(), value.map_or(Value::Null, Value::String))])
}

/// Refuses while the operator carries out a change of master: a request decided on the
/// current roles would be carried out on other ones.
pub fn no_change_of_master(rr: &RedisReplication) -> Result<(), Error> {
    let status = rr.status.clone().unwrap_or_default();
    match &status.target_master {
        Some(target) => Err(Error::Refused(format!(
            "a change of master of {} is in progress (to {target}, epoch {}); wait for it to \
             finish",
            rr.name_any(),
            status.epoch
        ))),
        None => Ok(()),
    }
}

/// Refuses on a set that hibernates or was asked to: no instance runs to carry the request out.
pub fn awake(rr: &RedisReplication) -> Result<(), Error> {
    let name = rr.name_any();
    let asked = rr
        .annotations()
        .get(HIBERNATION_ANNOTATION)
        .is_some_and(|v| parse_hibernation(v) == Ok(true));
    let state = rr.status.as_ref().and_then(|s| s.hibernation);
    match (asked, state) {
        (false, None) => Ok(()),
        (_, Some(state)) => Err(Error::Refused(format!(
            "{name} is {} ({HIBERNATION_ANNOTATION}): no instance runs; wake it first with \
             `kubectl vigil hibernate {name} off`",
            format!("{state:?}").to_lowercase()
        ))),
        (true, None) => Err(Error::Refused(format!(
            "{name} is asked to hibernate ({HIBERNATION_ANNOTATION}=on); wake it first with \
             `kubectl vigil hibernate {name} off`"
        ))),
    }
}

/// The pod, if it is an instance of the replication; else which pods are.
pub fn instance<'a>(name: &str, pods: &'a [Pod], pod: &str) -> Result<&'a Pod, Error> {
    pods.iter()
        .find(|p| p.name_any() == pod)
        .ok_or_else(|| Error::NoSuchPod {
            pod: pod.to_string(),
            replication: name.to_string(),
            known: known(pods.iter().map(ResourceExt::name_any)),
        })
}

/// "its pods: a, b" for an error message.
pub fn known(names: impl IntoIterator<Item = String>) -> String {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    match names.is_empty() {
        true => "it has no pods".into(),
        false => format!("its pods: {}", names.join(", ")),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::{Value, json};

    use crate::api::RedisReplication;

    pub fn replication(spec: Value, annotations: Value, status: Value) -> RedisReplication {
        serde_json::from_value(json!({
            "apiVersion": "redis.vigil.dev/v1alpha1", "kind": "RedisReplication",
            "metadata": {"name": "cache", "namespace": "demo", "annotations": annotations},
            "spec": spec,
            "status": status,
        }))
        .expect("replication fixture")
    }

    /// A pod of `cache` with a uid, labels and annotations.
    pub fn pod(name: &str, uid: &str, role: Option<&str>, annotations: Value) -> Pod {
        let mut labels = json!({"redis.vigil.dev/replication": "cache"});
        if let Some(role) = role {
            labels["redis.vigil.dev/role"] = json!(role);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": uid, "labels": labels, "annotations": annotations},
        }))
        .expect("pod fixture")
    }

    /// A settled three-instance set with `cache-0` master.
    pub fn settled() -> Value {
        json!({
            "phase": "Ready", "currentMaster": "cache-0", "epoch": 1,
            "readyInstances": 3, "updatedInstances": 3,
            "instances": [
                {"name": "cache-0", "role": "master", "ready": true, "replicationOffset": 900},
                {"name": "cache-1", "role": "replica", "ready": true, "replicationOffset": 900,
                    "linkStatus": "up"},
                {"name": "cache-2", "role": "replica", "ready": true, "replicationOffset": 900,
                    "linkStatus": "up"},
            ],
        })
    }

    pub fn pods() -> Vec<Pod> {
        vec![
            pod("cache-0", "u0", Some("master"), json!({})),
            pod("cache-1", "u1", Some("replica"), json!({})),
            pod("cache-2", "u2", Some("replica"), json!({})),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{pods, replication, settled};
    use super::{awake, instance, known, no_change_of_master};
    use crate::api::requests::HIBERNATION_ANNOTATION;
    use serde_json::json;

    #[test]
    fn a_hibernating_set_takes_no_request() {
        let rr = replication(json!({"instances": 3}), json!({}), settled());
        assert!(awake(&rr).is_ok());
        let rr = replication(
            json!({"instances": 3}),
            json!({HIBERNATION_ANNOTATION: "on"}),
            settled(),
        );
        let e = awake(&rr).map_err(|e| e.to_string());
        assert!(
            e.as_ref().is_err_and(|e| e.contains("asked to hibernate")),
            "{e:?}"
        );
        let mut status = settled();
        status["hibernation"] = json!("Hibernated");
        let rr = replication(json!({"instances": 3}), json!({}), status);
        let e = awake(&rr).map_err(|e| e.to_string());
        assert!(
            e.as_ref().is_err_and(|e| e.contains("cache is hibernated")
                && e.contains("kubectl vigil hibernate cache off")),
            "{e:?}"
        );
    }

    #[test]
    fn a_change_of_master_in_progress_refuses() {
        let mut status = settled();
        status["targetMaster"] = json!("cache-2");
        let rr = replication(json!({"instances": 3}), json!({}), status);
        let e = no_change_of_master(&rr).map_err(|e| e.to_string());
        assert!(
            e.as_ref()
                .is_err_and(|e| e.contains("in progress (to cache-2")),
            "{e:?}"
        );
    }

    #[test]
    fn a_missing_pod_names_the_set_and_its_pods() {
        let pods = pods();
        assert!(instance("cache", &pods, "cache-1").is_ok());
        let e = instance("cache", &pods, "cache-9")
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err(
                "pod \"cache-9\" is not an instance of redisreplication \"cache\" (its pods: \
                 cache-0, cache-1, cache-2)"
                    .into()
            )
        );
        assert_eq!(known(Vec::new()), "it has no pods");
    }
}
