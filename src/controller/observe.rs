//! Observing a `RedisReplication`: its pods as Kubernetes sees them and its instances as Redis
//! reports them. Unreachable instances are facts, not errors.

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tracing::debug;

use super::plan::ObservedInstance;
use super::{Context, Error};
use crate::api::RedisReplication;
use crate::redis::InstanceClient;
use crate::resources::{
    DEFAULT_PRIORITY, PRIORITY_ANNOTATION, ROLE_LABEL, RoleLabel, password_selector, pod_ordinal,
    pods_selector,
};

pub struct Observation {
    pub instances: Vec<ObservedInstance>,
    pub password: Option<String>,
}

/// Pods and their instances' replication state; `password` is what `read_password` returned.
pub async fn observe(
    ctx: &Context,
    rr: &RedisReplication,
    password: Option<String>,
) -> Result<Observation, Error> {
    let namespace = rr.namespace().unwrap_or_default();
    let name = rr.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = pods
        .list(&ListParams::default().labels(&pods_selector(&name)))
        .await
        .map_err(|source| Error::kube(format!("listing pods of {namespace}/{name}"), source))?;
    let uid = rr.uid();
    let mut instances: Vec<ObservedInstance> = listed
        .into_iter()
        .filter(|pod| {
            pod.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .filter_map(|pod| pod_facts(&name, &pod))
        .collect();
    instances.sort_by_key(|i| i.ordinal);
    let probes = instances.iter().map(|i| async {
        let started = std::time::Instant::now();
        let info = probe(i, password.as_deref(), ctx.probe_timeout).await;
        let up = info.is_some();
        ctx.metrics
            .probe(&namespace, &name, &i.name, started.elapsed(), up);
        info
    });
    let results = join_all(probes).await;
    for (inst, info) in instances.iter_mut().zip(results) {
        inst.redis = info;
    }
    Ok(Observation {
        instances,
        password,
    })
}

fn pod_facts(replication: &str, pod: &Pod) -> Option<ObservedInstance> {
    let name = pod.name_any();
    let ordinal = pod_ordinal(replication, &name)?;
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
        priority: pod
            .annotations()
            .get(PRIORITY_ANNOTATION)
            .and_then(|p| p.parse().ok())
            .unwrap_or(DEFAULT_PRIORITY),
    })
}

async fn probe(
    inst: &ObservedInstance,
    password: Option<&str>,
    timeout: Duration,
) -> Option<crate::redis::ReplicationInfo> {
    // A pod being deleted still runs until it stops: a terminating master must be seen, so the
    // planner can switch over before it goes.
    let address = inst.address()?;
    let result = async {
        let mut client = InstanceClient::connect(&address, password, timeout).await?;
        client.replication_info().await
    }
    .await;
    match result {
        Ok(info) => Some(info),
        Err(e) => {
            debug!(instance = %inst.name, error = %e, "instance unreachable");
            None
        }
    }
}

/// The instances' password from its Secret; `None` when auth is disabled.
pub async fn read_password(ctx: &Context, rr: &RedisReplication) -> Result<Option<String>, Error> {
    let namespace = rr.namespace().unwrap_or_default();
    let namespace = namespace.as_str();
    let Some((secret_name, key)) = password_selector(rr) else {
        return Ok(None);
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|source| Error::kube(format!("reading Secret {namespace}/{secret_name}"), source))?
        .ok_or_else(|| Error::MissingSecret {
            secret: secret_name.clone(),
            key: key.clone(),
        })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .ok_or_else(|| Error::MissingSecret {
            secret: secret_name.clone(),
            key: key.clone(),
        })?;
    String::from_utf8(value.0.clone())
        .map(Some)
        .map_err(|_| Error::InvalidSecret {
            secret: secret_name,
            key,
        })
}
