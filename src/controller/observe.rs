//! Observing a `RedisReplication`: its pods as Kubernetes sees them and its instances as Redis
//! reports them. Unreachable instances are facts, not errors.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, ResourceExt};

use super::plan::{ObservedInstance, PodProblem};
use super::{Context, Error};
use crate::api::RedisReplication;
use crate::api::requests::{RESTART_ANNOTATION, RESTARTED_AT_ANNOTATION};
use crate::labels::{
    CONFIG_ANNOTATION, DEFAULT_PRIORITY, PRIORITY_ANNOTATION, ROLE_LABEL, RoleLabel,
    SPEC_HASH_ANNOTATION,
};
use crate::monitor;
use crate::redis::Credentials;
use crate::resources::{
    REDIS_CONTAINER, config_annotation, instance_domain, instance_pod_spec, password_selector,
    pod_ordinal, spec_hash,
};
use crate::tls::{CA_KEY, CERT_KEY, PRIVATE_KEY_KEY, TlsClient};

pub struct Observation {
    pub instances: Vec<ObservedInstance>,
    pub credentials: Credentials,
    /// The `config` each pod records its Redis runs with (pod name -> settings).
    pub configs: HashMap<String, BTreeMap<String, String>>,
}

/// Pods (from the watched index, by replication: never a LIST per round) and their instances' replication
/// state; `credentials` are what `read_credentials` returned.
/// Probes answered before `fresh_after` (the last action on the set) are not used.
pub async fn observe(
    ctx: &Context,
    rr: &RedisReplication,
    namespace: &str,
    credentials: Credentials,
    fresh_after: Option<Instant>,
) -> Result<Observation, Error> {
    let name = rr.name_any();
    let uid = rr.uid();
    // Until the first list is in, an empty index would look like every pod gone.
    ctx.pods.wait_until_listed().await;
    // A pod labelled for the set but owned by an earlier replication of that name is not ours.
    let owned: Vec<Arc<Pod>> = ctx
        .pods
        .of_replication(namespace, &name)
        .into_iter()
        .filter(|pod| {
            pod.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect();
    let configs = owned
        .iter()
        .filter_map(|pod| {
            let recorded = pod.annotations().get(CONFIG_ANNOTATION)?;
            Some((pod.name_any(), serde_json::from_str(recorded).ok()?))
        })
        .collect();
    let mut instances: Vec<ObservedInstance> =
        owned.iter().filter_map(|pod| pod_facts(rr, pod)).collect();
    instances.sort_by_key(|i| i.ordinal);
    // A pod being deleted still runs until it stops: a terminating master must be seen, so the
    // planner can switch over before it goes.
    let probed: Vec<monitor::Instance> = instances
        .iter()
        .filter_map(|i| {
            Some(monitor::Instance {
                pod: i.name.clone(),
                address: i.address()?,
                // Answers from before the last action, or from before the pod said the process
                // stopped, do not count.
                fresh_after: fresh_after.max(i.stopped.is_some().then(Instant::now)),
            })
        })
        .collect();
    let answers = ctx.monitor.observe(rr, &probed, &credentials).await;
    for (probe, observed) in probed.iter().zip(answers) {
        if let Some(inst) = instances.iter_mut().find(|i| i.name == probe.pod) {
            inst.still = observed.answer.as_ref().map(|a| a.still);
            inst.redis = observed.answer.map(|a| a.info);
            inst.silent_for = observed.silent_for;
            inst.silent_at_offset = observed.silent_at_offset;
        }
    }
    Ok(Observation {
        instances,
        credentials,
        configs,
    })
}

fn pod_facts(rr: &RedisReplication, pod: &Pod) -> Option<ObservedInstance> {
    let name = pod.name_any();
    let ordinal = pod_ordinal(&rr.name_any(), &name)?;
    let annotation = |key: &str| pod.annotations().get(key).map(String::as_str);
    let status = pod.status.as_ref();
    let ip = status
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty());
    let pod_ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    Some(ObservedInstance {
        name,
        ordinal,
        ip,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        pod_ready,
        role_label: pod
            .labels()
            .get(ROLE_LABEL)
            .and_then(|l| RoleLabel::parse(l)),
        redis: None,
        priority: annotation(PRIORITY_ANNOTATION)
            .and_then(|p| p.parse().ok())
            .unwrap_or(DEFAULT_PRIORITY),
        spec_outdated: annotation(SPEC_HASH_ANNOTATION)
            != Some(spec_hash(&instance_pod_spec(rr, ordinal)).as_str())
            || restart_requested(rr, pod),
        config_outdated: annotation(CONFIG_ANNOTATION) != Some(config_annotation(rr).as_str()),
        problem: pod_problem(pod),
        stopped: container_stopped(pod),
        still: None,
        silent_for: None,
        silent_at_offset: None,
    })
}

/// A restart is asked of this pod: on the set (a value it was not created under), or on the pod
/// itself. The rolling update carries it out (replicas first, the master after a switchover).
fn restart_requested(rr: &RedisReplication, pod: &Pod) -> bool {
    let asked = rr.annotations().get(RESTART_ANNOTATION);
    pod.annotations().contains_key(RESTART_ANNOTATION)
        || (asked.is_some() && pod.annotations().get(RESTARTED_AT_ANNOTATION) != asked)
}

/// The Redis container is not running, as the kubelet reports it: terminated, or waiting to
/// (re)start (a crash in its restart back-off, say).
fn container_stopped(pod: &Pod) -> Option<String> {
    let container = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == REDIS_CONTAINER)?;
    let state = container.state.as_ref()?;
    if let Some(t) = &state.terminated {
        let reason = t.reason.as_deref().unwrap_or("no reason");
        return Some(format!(
            "container {REDIS_CONTAINER} terminated ({reason}, exit code {})",
            t.exit_code
        ));
    }
    state.waiting.as_ref().map(|w| {
        format!(
            "container {REDIS_CONTAINER} is waiting to start ({})",
            w.reason.as_deref().unwrap_or("no reason")
        )
    })
}

/// Container waiting reasons that do not resolve without a change (of the spec, a Secret, the
/// image registry, ...).
const STUCK_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// Why a pod cannot run, as Kubernetes reports it: the scheduler cannot place it (an unbound
/// claim, a node selector nothing matches, ...), or a container is stuck.
fn pod_problem(pod: &Pod) -> Option<PodProblem> {
    let status = pod.status.as_ref()?;
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"));
    if let Some(c) = unschedulable {
        return Some(PodProblem {
            reason: "Unschedulable".into(),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| {
            w.reason
                .as_deref()
                .is_some_and(|r| STUCK_REASONS.contains(&r))
        })
        .map(|w| PodProblem {
            reason: w.reason.clone().unwrap_or_default(),
            message: w.message.clone().unwrap_or_default(),
        })
}

/// What connecting to the instances takes, from the Secrets the spec names: the password (none
/// when auth is disabled) and, with `spec.tls`, the CA and certificate of the TLS client.
pub async fn read_credentials(
    ctx: &Context,
    rr: &RedisReplication,
    namespace: &str,
) -> Result<Credentials, Error> {
    let password = match password_selector(rr) {
        None => None,
        Some((secret_name, key)) => {
            const FIELD: &str = "spec.auth.existingSecret";
            let secret = read_secret(ctx, namespace, &secret_name, &key, FIELD).await?;
            let value = secret_value(&secret, &secret_name, &key, FIELD)?;
            let password = String::from_utf8(value.to_vec()).map_err(|_| Error::InvalidSecret {
                secret: secret_name,
                problem: format!("key {key} is not valid UTF-8"),
            })?;
            Some(password)
        }
    };
    let tls = match &rr.spec.tls {
        None => None,
        Some(tls) => {
            const FIELD: &str = "spec.tls.secretName";
            let name = &tls.secret_name;
            let secret = read_secret(ctx, namespace, name, CA_KEY, FIELD).await?;
            let value = |key| secret_value(&secret, name, key, FIELD);
            let domain = instance_domain(&rr.name_any(), namespace);
            let client = TlsClient::new(
                value(CA_KEY)?,
                value(CERT_KEY)?,
                value(PRIVATE_KEY_KEY)?,
                domain,
            )
            .map_err(|e| Error::InvalidSecret {
                secret: name.clone(),
                problem: e.to_string(),
            })?;
            Some(client)
        }
    };
    Ok(Credentials { password, tls })
}

/// Secret `name`, which `field` of the spec names; its absence is reported as the absence of
/// the first `key` needed from it.
/// The value of `key` in Secret `namespace/name`, which spec field `field` names.
pub async fn secret_bytes(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
    field: &'static str,
) -> Result<Vec<u8>, Error> {
    let secret = read_secret(ctx, namespace, name, key, field).await?;
    secret_value(&secret, name, key, field).map(<[u8]>::to_vec)
}

async fn read_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
    field: &'static str,
) -> Result<Secret, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    secrets
        .get_opt(name)
        .await
        .map_err(|source| Error::kube(format!("reading Secret {namespace}/{name}"), source))?
        .ok_or_else(|| Error::MissingSecret {
            secret: name.to_string(),
            key: key.to_string(),
            field,
        })
}

fn secret_value<'a>(
    secret: &'a Secret,
    name: &str,
    key: &str,
    field: &'static str,
) -> Result<&'a [u8], Error> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice())
        .ok_or_else(|| Error::MissingSecret {
            secret: name.to_string(),
            key: key.to_string(),
            field,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "cache-0"}, "status": status}))
            .expect("pod")
    }

    #[test]
    fn a_pruned_pod_tells_every_fact_the_whole_one_does() {
        let rr: RedisReplication = serde_json::from_value(json!({
            "apiVersion": "redis.vigil.dev/v1alpha1", "kind": "RedisReplication",
            "metadata": {"name": "cache", "namespace": "ns", "uid": "u1"},
            "spec": {"instances": 3},
        }))
        .expect("replication");
        let mut whole = crate::resources::instance_pod(&rr, 1);
        whole.status = pod(json!({
            "podIP": "10.244.0.7",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "redis", "image": "x", "imageID": "", "ready": false,
                "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
        }))
        .status;
        let mut pruned = whole.clone();
        super::super::pods::prune(&mut pruned);
        assert!(pruned.spec.is_none());
        let facts = pod_facts(&rr, &whole).expect("an instance pod");
        assert!(!facts.spec_outdated && facts.pod_ready && facts.stopped.is_some());
        assert_eq!(pod_facts(&rr, &pruned), Some(facts));
    }

    #[test]
    fn stuck_pods_are_told_from_starting_ones() {
        let unschedulable = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "pod has unbound immediate PersistentVolumeClaims"}]}),
        );
        let problem = pod_problem(&unschedulable).expect("problem");
        assert_eq!(problem.reason, "Unschedulable");
        assert!(problem.message.contains("PersistentVolumeClaims"));

        let waiting = |reason: &str| {
            pod(
                json!({"containerStatuses": [{"name": "redis", "image": "x", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": "m"}}}]}),
            )
        };
        assert_eq!(
            pod_problem(&waiting("ImagePullBackOff")).map(|p| p.reason),
            Some("ImagePullBackOff".into())
        );
        assert_eq!(
            pod_problem(&waiting("ContainerCreating")),
            None,
            "still starting"
        );
        assert_eq!(pod_problem(&pod(json!({}))), None);
    }
}
