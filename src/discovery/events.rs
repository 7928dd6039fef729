//! The Sentinel events a change of one master's view means, worded as Redis Sentinel publishes
//! them (its `sentinelEvent` formats), because clients match on the words: Lettuce refreshes
//! its topology on `+switch-master`, `+slave`, `+sdown`/`-sdown`, `+role-change` (and others)
//! whose payload names the master, redis-py, go-redis, Jedis and ioredis follow
//! `+switch-master`. Pure.

use super::catalog::{MasterView, ReplicaView};
use super::peers::Peer;
use crate::api::InstanceRole;
use crate::redis::Address;

/// A Sentinel event: published on the channel named after its type, as Sentinel does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub channel: Channel,
    pub payload: String,
}

/// The event types published here (Sentinel has more: those of its own failover steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    SwitchMaster,
    FailoverEnd,
    Sdown,
    SdownEnded,
    Odown,
    Slave,
    SlaveReconfDone,
    RoleChange,
    Sentinel,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SwitchMaster => "+switch-master",
            Self::FailoverEnd => "+failover-end",
            Self::Sdown => "+sdown",
            Self::SdownEnded => "-sdown",
            Self::Odown => "+odown",
            Self::Slave => "+slave",
            Self::SlaveReconfDone => "+slave-reconf-done",
            Self::RoleChange => "+role-change",
            Self::Sentinel => "+sentinel",
        }
    }
}

/// The word Sentinel's `+role-change` uses, for the roles it knows.
fn reported(role: InstanceRole) -> Option<&'static str> {
    match role {
        InstanceRole::Master => Some("master"),
        InstanceRole::Replica => Some("slave"),
        InstanceRole::Fenced | InstanceRole::Unknown => None,
    }
}

/// The events between two views of the same master, in the order Sentinel publishes them.
pub fn between(prev: &MasterView, next: &MasterView) -> Vec<Event> {
    let mut events = Vec::new();
    let Some(next_master) = &next.master else {
        return events;
    };
    // The operator starts a failover only once the master is objectively down.
    let odown = prev.down && next.failing_over && !prev.failing_over;
    let switched = match &prev.master {
        Some(old) if old != next_master => {
            if odown {
                events.push(master_event(
                    Channel::Odown,
                    &next.name,
                    old,
                    " #quorum 1/1",
                ));
            }
            // Both in one change: the failover ends, then the new master is announced.
            if !next.failing_over {
                events.push(master_event(Channel::FailoverEnd, &next.name, old, ""));
            }
            events.push(Event {
                channel: Channel::SwitchMaster,
                payload: format!(
                    "{} {} {} {} {}",
                    next.name, old.host, old.port, next_master.host, next_master.port
                ),
            });
            true
        }
        Some(same) => {
            if next.down && !prev.down {
                events.push(master_event(Channel::Sdown, &next.name, same, ""));
            }
            if prev.down && !next.down {
                events.push(master_event(Channel::SdownEnded, &next.name, same, ""));
            }
            if odown {
                events.push(master_event(
                    Channel::Odown,
                    &next.name,
                    same,
                    " #quorum 1/1",
                ));
            }
            if prev.failing_over && !next.failing_over {
                events.push(master_event(Channel::FailoverEnd, &next.name, same, ""));
            }
            false
        }
        None => false,
    };
    for replica in &next.replicas {
        let before = prev.replica(&replica.address);
        // Between the roles Redis reports (a fenced instance is a replica of nobody).
        if let (Some(b), Some(word)) = (before, reported(replica.role))
            && reported(b.role).is_some()
            && b.role != replica.role
        {
            events.push(replica_event(
                Channel::RoleChange,
                next,
                next_master,
                replica,
                &format!(" new reported role is {word}"),
            ));
        }
        let was_master = prev.master.as_ref() == Some(&replica.address);
        let channel = match before {
            Some(b) if replica.healthy && (switched || b.reconfiguring) => Channel::SlaveReconfDone,
            // Following the new master takes a resync: that is not a replica failing.
            Some(_) if switched => continue,
            // Replicas lose their link when the master fails: that is the master's news (a
            // Sentinel sees them up), and Lettuce would spend its rate-limited topology refresh
            // on it just before the `+switch-master` that matters.
            Some(b) if b.healthy && !replica.healthy && !next.down => Channel::Sdown,
            Some(b) if !b.healthy && replica.healthy && b.announced => Channel::SdownEnded,
            Some(b) if !b.healthy && replica.healthy => Channel::Slave,
            None if replica.healthy => Channel::Slave,
            // A replaced master is now a replica, down until it rejoins.
            None if was_master => Channel::Sdown,
            _ => continue,
        };
        events.push(replica_event(channel, next, next_master, replica, ""));
    }
    events
}

/// `+sentinel` for each master a newly seen peer serves, as Sentinel announces a Sentinel it
/// discovers (Lettuce reconnects its Sentinel connections on it).
pub fn new_sentinel(peer: &Peer, masters: &[(&MasterView, &Address)]) -> Vec<Event> {
    masters
        .iter()
        .filter(|(view, _)| peer.serves(&view.namespace))
        .map(|(view, master)| Event {
            channel: Channel::Sentinel,
            payload: format!(
                "sentinel {} {} {} @ {} {} {}",
                peer.run_id,
                peer.address.host,
                peer.address.port,
                view.name,
                master.host,
                master.port
            ),
        })
        .collect()
}

/// `master <name> <ip> <port><suffix>`.
fn master_event(channel: Channel, name: &str, master: &Address, suffix: &str) -> Event {
    Event {
        channel,
        payload: format!("master {name} {} {}{suffix}", master.host, master.port),
    }
}

/// `slave <ip:port> <ip> <port> @ <name> <master ip> <master port><suffix>`.
fn replica_event(
    channel: Channel,
    view: &MasterView,
    master: &Address,
    replica: &ReplicaView,
    suffix: &str,
) -> Event {
    Event {
        channel,
        payload: format!(
            "slave {} {} {} @ {} {} {}{suffix}",
            replica.address,
            replica.address.host,
            replica.address.port,
            view.name,
            master.host,
            master.port
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;
    use crate::discovery::catalog::tests::{cache, healthy_set, status};

    fn payloads(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{} {}", e.channel.as_str(), e.payload))
            .collect()
    }

    #[test]
    fn a_completed_failover_publishes_switch_master_with_old_and_new_addresses() {
        let before = healthy_set();
        let (view, _) = MasterView::observe(&before, None).expect("view");

        // The master is down, then the intent names the new one: clients are sent there at
        // once (its promotion closes the connections of any that arrive before it).
        let mut down = before.clone();
        status(&mut down).phase = Some(Phase::MasterUnavailable);
        let (view, events) = MasterView::observe(&down, Some(&view)).expect("view");
        assert_eq!(payloads(&events), ["+sdown master ns.cache 10.0.0.1 6379"]);
        let mut intent = cache(
            2,
            &[
                (1, "unknown", false),
                (2, "replica", true),
                (3, "replica", true),
            ],
        );
        status(&mut intent).phase = Some(Phase::MasterUnavailable);
        status(&mut intent).target_master = Some("cache-2".into());
        let (mid, events) = MasterView::observe(&intent, Some(&view)).expect("view");
        assert_eq!(mid.master, Some(Address::new("10.0.0.2", 6379)));
        assert_eq!(
            payloads(&events),
            [
                "+odown master ns.cache 10.0.0.1 6379 #quorum 1/1",
                "+switch-master ns.cache 10.0.0.1 6379 10.0.0.2 6379",
                "+sdown slave 10.0.0.1:6379 10.0.0.1 6379 @ ns.cache 10.0.0.2 6379",
                "+slave-reconf-done slave 10.0.0.3:6379 10.0.0.3 6379 @ ns.cache 10.0.0.2 6379"
            ]
        );

        let mut done = cache(
            2,
            &[
                (1, "unknown", false),
                (2, "master", true),
                (3, "replica", true),
            ],
        );
        status(&mut done).epoch = 2;
        let (after, events) = MasterView::observe(&done, Some(&mid)).expect("view");
        assert_eq!(after.master, Some(Address::new("10.0.0.2", 6379)));
        assert_eq!(
            payloads(&events),
            [
                "-sdown master ns.cache 10.0.0.2 6379",
                "+failover-end master ns.cache 10.0.0.2 6379"
            ]
        );
        let old = after.replica(&Address::new("10.0.0.1", 6379)).expect("old");
        assert!(!old.healthy);

        // The old master rejoins as a replica.
        let rejoined = cache(
            2,
            &[
                (1, "replica", true),
                (2, "master", true),
                (3, "replica", true),
            ],
        );
        let (_, events) = MasterView::observe(&rejoined, Some(&after)).expect("view");
        assert_eq!(
            payloads(&events),
            ["-sdown slave 10.0.0.1:6379 10.0.0.1 6379 @ ns.cache 10.0.0.2 6379"]
        );
    }

    #[test]
    fn down_odown_and_recovery_are_published_for_the_master() {
        let (ready, _) = MasterView::observe(&healthy_set(), None).expect("view");
        let mut down = healthy_set();
        status(&mut down).phase = Some(Phase::MasterUnavailable);
        let (down_view, events) = MasterView::observe(&down, Some(&ready)).expect("view");
        assert_eq!(payloads(&events), ["+sdown master ns.cache 10.0.0.1 6379"]);
        assert!(down_view.down);

        let mut intent = down.clone();
        status(&mut intent).target_master = Some("cache-2".into());
        status(&mut intent).master_address = Some("10.0.0.2:6379".into());
        let (_, events) = MasterView::observe(&intent, Some(&down_view)).expect("view");
        assert_eq!(
            payloads(&events),
            [
                "+odown master ns.cache 10.0.0.1 6379 #quorum 1/1",
                "+switch-master ns.cache 10.0.0.1 6379 10.0.0.2 6379",
                "+sdown slave 10.0.0.1:6379 10.0.0.1 6379 @ ns.cache 10.0.0.2 6379",
                "+slave-reconf-done slave 10.0.0.3:6379 10.0.0.3 6379 @ ns.cache 10.0.0.2 6379"
            ]
        );

        let (_, events) = MasterView::observe(&healthy_set(), Some(&down_view)).expect("view");
        assert_eq!(payloads(&events), ["-sdown master ns.cache 10.0.0.1 6379"]);
    }

    #[test]
    fn replicas_are_announced_when_they_join_and_flagged_when_they_fail() {
        let two = cache(1, &[(1, "master", true), (2, "replica", true)]);
        let (view, _) = MasterView::observe(&two, None).expect("view");
        let syncing = cache(
            1,
            &[
                (1, "master", true),
                (2, "replica", true),
                (3, "replica", false),
            ],
        );
        let (view, events) = MasterView::observe(&syncing, Some(&view)).expect("view");
        assert!(events.is_empty(), "not announced before it is ready");
        let (view, events) = MasterView::observe(&healthy_set(), Some(&view)).expect("view");
        assert_eq!(
            payloads(&events),
            ["+slave slave 10.0.0.3:6379 10.0.0.3 6379 @ ns.cache 10.0.0.1 6379"]
        );
        let (_, events) = MasterView::observe(&syncing, Some(&view)).expect("view");
        assert_eq!(
            payloads(&events),
            ["+sdown slave 10.0.0.3:6379 10.0.0.3 6379 @ ns.cache 10.0.0.1 6379"]
        );
    }

    #[test]
    fn replicas_resyncing_after_a_switch_are_reconfigured_not_down() {
        let (view, _) = MasterView::observe(&healthy_set(), None).expect("view");
        let resyncing = cache(
            2,
            &[
                (1, "fenced", false),
                (2, "master", true),
                (3, "replica", false),
            ],
        );
        let (view, events) = MasterView::observe(&resyncing, Some(&view)).expect("view");
        assert_eq!(
            payloads(&events),
            [
                "+failover-end master ns.cache 10.0.0.1 6379",
                "+switch-master ns.cache 10.0.0.1 6379 10.0.0.2 6379",
                "+sdown slave 10.0.0.1:6379 10.0.0.1 6379 @ ns.cache 10.0.0.2 6379",
            ],
            "no +sdown for the replica that resyncs"
        );
        let (view, events) = MasterView::observe(&resyncing, Some(&view)).expect("view");
        assert!(events.is_empty(), "{events:?}");
        let synced = cache(
            2,
            &[
                (1, "fenced", false),
                (2, "master", true),
                (3, "replica", true),
            ],
        );
        let (view, events) = MasterView::observe(&synced, Some(&view)).expect("view");
        assert_eq!(
            payloads(&events),
            ["+slave-reconf-done slave 10.0.0.3:6379 10.0.0.3 6379 @ ns.cache 10.0.0.2 6379"]
        );
        let (_, events) = MasterView::observe(&synced, Some(&view)).expect("view");
        assert!(events.is_empty(), "once: {events:?}");
    }

    #[test]
    fn an_instance_reporting_another_role_is_a_role_change() {
        let claims = cache(
            1,
            &[
                (1, "master", true),
                (2, "master", false),
                (3, "replica", true),
            ],
        );
        let (view, _) = MasterView::observe(&claims, None).expect("view");
        let (view, events) = MasterView::observe(&healthy_set(), Some(&view)).expect("view");
        assert_eq!(
            payloads(&events),
            [
                "+role-change slave 10.0.0.2:6379 10.0.0.2 6379 @ ns.cache 10.0.0.1 6379 new \
                 reported role is slave",
                "-sdown slave 10.0.0.2:6379 10.0.0.2 6379 @ ns.cache 10.0.0.1 6379",
            ]
        );
        let mut fenced = healthy_set();
        status(&mut fenced).instances[1].role = InstanceRole::Fenced;
        let (view, _) = MasterView::observe(&fenced, Some(&view)).expect("view");
        let (_, events) = MasterView::observe(&healthy_set(), Some(&view)).expect("view");
        assert!(
            events.iter().all(|e| e.channel != Channel::RoleChange),
            "a fenced instance already reports itself a replica: {events:?}"
        );
    }

    #[test]
    fn replicas_unlinked_by_a_failed_master_are_not_reported_down() {
        let (view, _) = MasterView::observe(&healthy_set(), None).expect("view");
        let mut failed = cache(
            1,
            &[
                (1, "unknown", false),
                (2, "replica", false),
                (3, "replica", false),
            ],
        );
        status(&mut failed).phase = Some(Phase::MasterUnavailable);
        let (_, events) = MasterView::observe(&failed, Some(&view)).expect("view");
        assert_eq!(payloads(&events), ["+sdown master ns.cache 10.0.0.1 6379"]);
    }

    #[test]
    fn a_new_peer_is_announced_for_the_masters_it_serves() {
        use crate::discovery::peers::Scope;
        let (view, _) = MasterView::observe(&healthy_set(), None).expect("view");
        let master = Address::new("10.0.0.1", 6379);
        let peer = |scope| Peer {
            run_id: "abc".into(),
            address: Address::new("10.1.0.5", 26379),
            scope,
            renewed: std::time::Instant::now(),
        };
        assert_eq!(
            payloads(&new_sentinel(&peer(Scope::All), &[(&view, &master)])),
            ["+sentinel sentinel abc 10.1.0.5 26379 @ ns.cache 10.0.0.1 6379"]
        );
        let elsewhere = peer(Scope::Namespace("other".into()));
        assert!(new_sentinel(&elsewhere, &[(&view, &master)]).is_empty());
    }
}
