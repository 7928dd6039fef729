//! The boot rule (safety rule 2): a starting Redis never makes itself a writable master. It
//! follows the master the status records, or stays fenced until the operator decides.

use std::time::Duration;

use kube::Api;
use tracing::warn;

use super::fence::Known;
use super::{Error, Settings};
use crate::api::{Persistence, RedisReplication, RedisReplicationStatus};
use crate::redis::Address;
use crate::redis_conf::MinReplicas;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// Replicate from the recorded master.
    ReplicaOf(Address),
    /// Read-only, following nobody, feeding nobody.
    Fenced { reason: String },
}

/// Pure: the boot role for `pod` given the recorded status.
pub fn decide_boot(status: Option<&RedisReplicationStatus>, pod: &str, pod_ip: &str) -> Boot {
    let fenced = |reason: &str| Boot::Fenced {
        reason: reason.to_string(),
    };
    let Some(status) = status else {
        return fenced("no status yet: the operator has not chosen a master");
    };
    // Fenced by request: its data stays as the user is inspecting it. Waking from hibernation:
    // the recorded address is gone with the old pods, and the operator rewires everyone.
    if status.fenced_instances.iter().any(|f| f == pod) {
        return fenced("fenced by request (redis.vigil.dev/fenced-instances)");
    }
    if status.hibernation.is_some() {
        return fenced("the set wakes from hibernation: the operator rewires the instances");
    }
    match (&status.current_master, &status.master_address) {
        (None, _) => fenced("no master recorded yet"),
        (Some(master), _) if master == pod => {
            fenced("this instance is the recorded master and restarted: the operator decides")
        }
        (Some(_), None) => fenced("the recorded master has no address"),
        (Some(_), Some(address)) => match Address::parse(address) {
            Some(a) if a.host == pod_ip => fenced("the recorded master address is our own"),
            Some(a) => Boot::ReplicaOf(a),
            None => fenced("the recorded master address cannot be parsed"),
        },
    }
}

/// What the spec says about how an instance runs, read at boot.
#[derive(Clone, Copy, Debug)]
pub struct SpecSettings {
    pub min_replicas: MinReplicas,
    pub persistence: Persistence,
    /// What the self-fence (rule 9) needs to know.
    pub known: Known,
}

/// Reads the replication, retrying while the apiserver is unreachable (bounded: after that the
/// container exits and the kubelet's restart backoff takes over). Returns the boot role, the
/// spec's settings and the status read.
pub async fn fetch_boot(
    settings: &Settings,
    api: &Api<RedisReplication>,
) -> Result<(Boot, SpecSettings, Option<RedisReplicationStatus>), Error> {
    let mut delay = Duration::from_millis(200);
    let mut attempts = 0;
    let rr = loop {
        match api.get(&settings.replication).await {
            Ok(rr) => break rr,
            Err(source) if attempts >= 8 => {
                return Err(Error::ReadReplication {
                    namespace: settings.namespace.clone(),
                    name: settings.replication.clone(),
                    source,
                });
            }
            Err(e) => {
                warn!(error = %e, "cannot read RedisReplication yet; retrying");
                attempts += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    let boot = decide_boot(rr.status.as_ref(), &settings.pod_name, &settings.pod_ip);
    let spec = SpecSettings {
        min_replicas: MinReplicas::from_spec(&rr.spec.failover),
        persistence: rr.spec.effective_persistence(),
        known: Known::of(&rr),
    };
    Ok((boot, spec, rr.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(master: Option<&str>, address: Option<&str>) -> RedisReplicationStatus {
        RedisReplicationStatus {
            current_master: master.map(str::to_string),
            master_address: address.map(str::to_string),
            epoch: 1,
            ..RedisReplicationStatus::default()
        }
    }

    #[test]
    fn replicas_follow_the_recorded_master() {
        let s = status(Some("cache-0"), Some("127.0.0.10:6379"));
        assert_eq!(
            decide_boot(Some(&s), "cache-1", "127.0.0.11"),
            Boot::ReplicaOf(Address::new("127.0.0.10", 6379))
        );
    }

    #[test]
    fn fenced_and_waking_instances_follow_nobody() {
        let mut s = status(Some("cache-0"), Some("127.0.0.10:6379"));
        s.fenced_instances = vec!["cache-1".into()];
        assert!(matches!(
            decide_boot(Some(&s), "cache-1", "127.0.0.11"),
            Boot::Fenced { .. }
        ));
        assert!(matches!(
            decide_boot(Some(&s), "cache-2", "127.0.0.12"),
            Boot::ReplicaOf(_)
        ));
        s.hibernation = Some(crate::api::HibernationState::Waking);
        assert!(matches!(
            decide_boot(Some(&s), "cache-2", "127.0.0.12"),
            Boot::Fenced { .. }
        ));
    }

    #[test]
    fn never_a_writable_master_on_boot() {
        let cases = [
            (None, "cache-0"),
            (Some(status(None, None)), "cache-0"),
            (
                Some(status(Some("cache-0"), Some("127.0.0.10:6379"))),
                "cache-0",
            ),
            (Some(status(Some("cache-0"), None)), "cache-1"),
            (Some(status(Some("cache-0"), Some("garbage"))), "cache-1"),
            (
                Some(status(Some("cache-0"), Some("127.0.0.11:6379"))),
                "cache-1",
            ),
        ];
        for (s, pod) in cases {
            assert!(
                matches!(
                    decide_boot(s.as_ref(), pod, "127.0.0.11"),
                    Boot::Fenced { .. }
                ),
                "{s:?} {pod}"
            );
        }
    }
}
