//! Safety rule 9 on the agent's side: a master that neither a quorum of its replicas nor the
//! apiserver confirms for a while fences itself. The timing is `crate::isolation`'s.

use std::time::Duration;

use kube::Api;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::Settings;
use crate::api::RedisReplication;
use crate::isolation::{
    LOCAL_COMMAND_TIMEOUT, REPLICA_ACK_WAIT_MS, ROUND_EVERY, fence_after, quorum,
};
use crate::redis::{Address, FENCE_HOST, FENCE_PORT, InstanceClient, ReplicationInfo};

/// What the spec says about confirming a master, as last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    /// Replicas the spec asks for (`instances - 1`).
    pub replicas: u32,
    /// How many of them must ack (`crate::isolation::quorum`).
    pub quorum: u32,
    pub down_after: Duration,
    pub failover_enabled: bool,
}

impl Known {
    pub fn of(rr: &RedisReplication) -> Self {
        let replicas = u32::try_from(rr.spec.instances.max(1) - 1).unwrap_or(0);
        Self {
            replicas,
            quorum: quorum(replicas, rr.spec.topology),
            down_after: rr.spec.failover.down_after(),
            failover_enabled: rr.spec.failover.enabled,
        }
    }

    /// A master alone, or one the operator never replaces, has nothing to fence against.
    fn needs_confirmation(&self) -> bool {
        self.quorum > 0 && self.failover_enabled
    }
}

/// Pure: whether the apiserver's copy confirms `pod` as the master: the status names it master
/// and the operator has not recorded it silent, or names it the target of a change in progress.
pub fn apiserver_confirms(rr: &RedisReplication, pod: &str) -> bool {
    let Some(status) = rr.status.as_ref() else {
        return false;
    };
    let target = status.target_master.as_deref();
    if target == Some(pod) {
        return true;
    }
    status.current_master.as_deref() == Some(pod)
        && target.is_none()
        && status.master_silent_since.is_none()
}

/// The apiserver's side of confirmation, shared by the rounds and the reader.
struct ApiConfirmation {
    /// When the last read that confirmed the master started.
    confirmed: Option<Instant>,
    /// The spec as last read.
    known: Known,
}

/// Runs confirmation rounds for as long as the agent runs.
pub async fn watch(settings: Settings, api: Api<RedisReplication>, known: Known) {
    let (needed_tx, needed) = watch::channel(false);
    let (confirmation_tx, confirmation) = watch::channel(ApiConfirmation {
        confirmed: None,
        known,
    });
    tokio::spawn(read_while_needed(
        api,
        settings.replication.clone(),
        settings.pod_name.clone(),
        needed,
        confirmation_tx,
    ));
    let mut rounds = tokio::time::interval(ROUND_EVERY);
    rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut client: Option<InstanceClient> = None;
    let mut confirmed = Instant::now();
    // Set while this agent's fence is in place: it turned stale reads off, to turn them back on.
    let mut fenced_here = false;
    loop {
        rounds.tick().await;
        let start = Instant::now();
        let Some(info) = local_info(&settings, &mut client).await else {
            // Redis does not answer: it takes no writes either, and it is fenced as soon as it
            // answers again if confirmation is still missing.
            continue;
        };
        let Some(local) = client.as_mut() else {
            continue;
        };
        let known = confirmation.borrow().known;
        // The operator made the fenced instance a linked replica, or master again.
        let reinstated = info.is_master() || info.is_synced_replica();
        // (`confirmed` stays at the last round before: the promotion came after it.)
        if fenced_here && reinstated {
            match local.config_set("replica-serve-stale-data", "yes").await {
                Ok(()) => fenced_here = false,
                Err(e) => warn!(error = %e, "cannot turn stale reads back on"),
            }
        }
        if !info.is_master() || !known.needs_confirmation() {
            // A replica needs no confirmation; once promoted, it counts from the last round
            // before the promotion, which the operator's hold counts from too.
            confirmed = start;
            needed_tx.send_if_modified(|n| std::mem::replace(n, false));
            continue;
        }
        match local.heartbeat(known.quorum, REPLICA_ACK_WAIT_MS).await {
            Ok(acks) if acks >= i64::from(known.quorum) => {
                confirmed = start;
                needed_tx.send_if_modified(|n| std::mem::replace(n, false));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "heartbeat failed");
                client = None;
            }
        }
        needed_tx.send_if_modified(|n| !std::mem::replace(n, true));
        if let Some(api_confirmed) = confirmation.borrow().confirmed {
            confirmed = confirmed.max(api_confirmed);
        }
        let unconfirmed = confirmed.elapsed();
        if unconfirmed < fence_after(known.down_after) {
            continue;
        }
        warn!(
            ?unconfirmed,
            replicas = known.replicas,
            "isolated master: no quorum of replicas and no apiserver confirmation; fencing itself"
        );
        match fence(&settings, &mut client).await {
            Ok(()) => {
                fenced_here = true;
                info!("fenced: read-only, following nobody, clients disconnected");
            }
            Err(e) => warn!(error = %e, "cannot fence; retrying next round"),
        }
    }
}

/// Reads the `RedisReplication` while the rounds lack a replica quorum, once per half
/// tolerance: a confirmation counts from the read's start, so however long a read takes, the
/// fence's deadline does not depend on it (`crate::isolation`).
async fn read_while_needed(
    api: Api<RedisReplication>,
    name: String,
    pod: String,
    mut needed: watch::Receiver<bool>,
    confirmation: watch::Sender<ApiConfirmation>,
) {
    loop {
        if needed.wait_for(|n| *n).await.is_err() {
            return;
        }
        let start = Instant::now();
        let known = confirmation.borrow().known;
        let read = tokio::time::timeout(fence_after(known.down_after), api.get(&name)).await;
        if start.elapsed() > fence_after(known.down_after) / 2 {
            warn!(took = ?start.elapsed(), "slow read of the RedisReplication");
        }
        match read {
            Ok(Ok(rr)) => confirmation.send_modify(|c| {
                c.known = Known::of(&rr);
                if apiserver_confirms(&rr, &pod) {
                    c.confirmed = Some(start);
                }
            }),
            Ok(Err(e)) => warn!(error = %e, "cannot read the RedisReplication"),
            Err(_) => warn!("the apiserver did not answer within the fence's tolerance"),
        }
        tokio::time::sleep_until(start + fence_after(known.down_after) / 2).await;
    }
}

/// The kept local connection, (re)opened when there is none.
async fn local<'a>(
    settings: &Settings,
    client: &'a mut Option<InstanceClient>,
) -> Result<&'a mut InstanceClient, crate::redis::Error> {
    match client {
        Some(kept) => Ok(kept),
        None => {
            let password = settings.password.as_deref();
            let opened =
                InstanceClient::connect_local(&settings.socket(), password, LOCAL_COMMAND_TIMEOUT)
                    .await?;
            Ok(client.insert(opened))
        }
    }
}

/// `INFO replication` over the kept local connection; a failure drops it.
async fn local_info(
    settings: &Settings,
    client: &mut Option<InstanceClient>,
) -> Option<ReplicationInfo> {
    let info = local(settings, client).await.ok()?.replication_info().await;
    if info.is_err() {
        *client = None;
    }
    info.ok()
}

/// Stale reads off (a linearizable read never comes from a fenced instance), then follow
/// nobody and close the clients in one `MULTI`/`EXEC`, so they re-resolve the master.
async fn fence(
    settings: &Settings,
    client: &mut Option<InstanceClient>,
) -> Result<(), crate::redis::Error> {
    let local = local(settings, client).await?;
    local.config_set("replica-serve-stale-data", "no").await?;
    local
        .change_role(Some(&Address::new(FENCE_HOST, FENCE_PORT)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RedisReplicationStatus;
    use crate::resources::fixtures::replication;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn rr(status: RedisReplicationStatus) -> RedisReplication {
        let mut rr = replication(serde_json::json!({"instances": 3}));
        rr.status = Some(status);
        rr
    }

    fn master(name: &str) -> RedisReplicationStatus {
        RedisReplicationStatus {
            current_master: Some(name.into()),
            ..RedisReplicationStatus::default()
        }
    }

    #[test]
    fn the_apiserver_confirms_only_an_unsuspected_master() {
        assert!(apiserver_confirms(&rr(master("cache-0")), "cache-0"));
        assert!(!apiserver_confirms(&rr(master("cache-1")), "cache-0"));
        let silent = RedisReplicationStatus {
            master_silent_since: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..master("cache-0")
        };
        assert!(
            !apiserver_confirms(&rr(silent), "cache-0"),
            "the operator may be about to promote"
        );
        let moving = RedisReplicationStatus {
            target_master: Some("cache-1".into()),
            ..master("cache-0")
        };
        assert!(!apiserver_confirms(&rr(moving.clone()), "cache-0"));
        assert!(
            apiserver_confirms(&rr(moving), "cache-1"),
            "the target of a change is being promoted"
        );
        let mut none = rr(master("cache-0"));
        none.status = None;
        assert!(!apiserver_confirms(&none, "cache-0"));
    }

    #[test]
    fn a_master_alone_or_without_failover_needs_no_confirmation() {
        let mut r = rr(master("cache-0"));
        r.spec.instances = 1;
        assert!(!Known::of(&r).needs_confirmation());
        r.spec.instances = 3;
        assert_eq!(Known::of(&r).replicas, 2);
        assert!(Known::of(&r).needs_confirmation());
        r.spec.failover.enabled = false;
        assert!(!Known::of(&r).needs_confirmation());
    }
}
