//! What discovery knows about each `RedisReplication`, derived from its status alone, and the
//! Sentinel events that a change of status means. Pure.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use crate::api::{Phase, RedisReplication};
use crate::redis::Address;

/// Namespace and name of a `RedisReplication`.
pub type ObjectKey = (String, String);

pub fn key(rr: &RedisReplication) -> ObjectKey {
    (rr.namespace().unwrap_or_default(), rr.name_any())
}

/// The Sentinel master name of a replication: `spec.sentinelMasterName`, else
/// `<namespace>.<name>`.
pub fn master_name(rr: &RedisReplication) -> Option<String> {
    match &rr.spec.sentinel_master_name {
        Some(name) => Some(name.clone()),
        None => Some(format!("{}.{}", rr.namespace()?, rr.name_any())),
    }
}

/// One monitored master, as Sentinel would describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterView {
    pub name: String,
    /// The master clients should use. While a promotion is in progress (`targetMaster` set) it
    /// stays the previous one, as Sentinel switches only once the new master is promoted.
    pub master: Option<Address>,
    /// The recorded master is unavailable (`phase: MasterUnavailable`).
    pub down: bool,
    pub failing_over: bool,
    pub epoch: i64,
    pub down_after_milliseconds: i64,
    /// Every other instance with an address.
    pub replicas: Vec<ReplicaView>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaView {
    pub address: Address,
    /// A ready replica: linked to its master and synced.
    pub healthy: bool,
    pub link_up: bool,
    pub offset: i64,
    /// `+slave` was published for it (or it was there when discovery first saw the set).
    announced: bool,
}

/// A Sentinel event: the channel is the event type, as Sentinel publishes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub channel: &'static str,
    pub payload: String,
}

impl MasterView {
    /// The view of `rr` after `previous` (its last view), and the events between the two.
    pub fn observe(rr: &RedisReplication, previous: Option<&Self>) -> Option<(Self, Vec<Event>)> {
        let name = master_name(rr)?;
        let status = rr.status.clone().unwrap_or_default();
        let recorded = status.master_address.as_deref().and_then(Address::parse);
        let failing_over = status.target_master.is_some();
        let master = match previous {
            Some(p) if failing_over && p.name == name && p.master.is_some() => p.master.clone(),
            _ => recorded,
        };
        let replicas = status
            .instances
            .iter()
            .filter_map(|i| {
                let address = Address::parse(i.address.as_deref()?)?;
                if Some(&address) == master.as_ref() {
                    return None;
                }
                let healthy = i.role == "replica" && i.ready;
                let announced = match previous {
                    Some(p) => match p.replica(&address) {
                        Some(before) => before.announced || healthy,
                        None => healthy || p.master.as_ref() == Some(&address),
                    },
                    // Discovery's first sight of a set is no news; later arrivals are.
                    None => true,
                };
                Some(ReplicaView {
                    address,
                    healthy,
                    link_up: i.link_status.as_deref() == Some("up"),
                    offset: i.replication_offset.unwrap_or(0),
                    announced,
                })
            })
            .collect();
        let view = Self {
            name,
            master,
            down: status.phase == Some(Phase::MasterUnavailable),
            failing_over,
            epoch: status.epoch,
            down_after_milliseconds: rr.spec.failover.down_after_milliseconds,
            replicas,
        };
        let events = match previous {
            Some(p) if p.name == view.name => p.events_to(&view),
            _ => Vec::new(),
        };
        Some((view, events))
    }

    pub fn replica(&self, address: &Address) -> Option<&ReplicaView> {
        self.replicas.iter().find(|r| &r.address == address)
    }

    fn events_to(&self, next: &Self) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(next_master) = &next.master else {
            return events;
        };
        match &self.master {
            Some(old) if old != next_master => events.push(Event {
                channel: "+switch-master",
                payload: format!(
                    "{} {} {} {} {}",
                    next.name, old.host, old.port, next_master.host, next_master.port
                ),
            }),
            Some(same) => {
                if next.down && !self.down {
                    events.push(self.master_event("+sdown", same, ""));
                }
                if self.down && !next.down {
                    events.push(self.master_event("-sdown", same, ""));
                }
                // The operator starts a failover only once the master is objectively down.
                if self.down && next.failing_over && !self.failing_over {
                    events.push(self.master_event("+odown", same, " #quorum 1/1"));
                }
            }
            None => {}
        }
        for replica in &next.replicas {
            let was_master = self.master.as_ref() == Some(&replica.address);
            let channel = match self.replica(&replica.address) {
                Some(b) if b.healthy && !replica.healthy => "+sdown",
                Some(b) if !b.healthy && replica.healthy && b.announced => "-sdown",
                Some(b) if !b.healthy && replica.healthy => "+slave",
                None if replica.healthy => "+slave",
                // A replaced master is now a replica, down until it rejoins.
                None if was_master => "+sdown",
                _ => continue,
            };
            events.push(Event {
                channel,
                payload: format!(
                    "slave {} {} {} @ {} {} {}",
                    replica.address,
                    replica.address.host,
                    replica.address.port,
                    next.name,
                    next_master.host,
                    next_master.port
                ),
            });
        }
        events
    }

    fn master_event(&self, channel: &'static str, master: &Address, suffix: &str) -> Event {
        Event {
            channel,
            payload: format!(
                "master {} {} {}{suffix}",
                self.name, master.host, master.port
            ),
        }
    }
}

/// Every watched replication's view.
#[derive(Default)]
pub struct Catalog {
    views: BTreeMap<ObjectKey, MasterView>,
}

impl Catalog {
    /// Records the latest state of `rr`; returns the events to publish. Events of a name that
    /// two replications claim are not published: that name is answered for neither.
    pub fn apply(&mut self, rr: &RedisReplication) -> Vec<Event> {
        let key = key(rr);
        let Some((view, events)) = MasterView::observe(rr, self.views.get(&key)) else {
            return Vec::new();
        };
        let name = view.name.clone();
        self.views.insert(key, view);
        if self.sole_claimant(&name).is_none() {
            return Vec::new();
        }
        events
    }

    pub fn remove(&mut self, key: &ObjectKey) {
        self.views.remove(key);
    }

    /// Forgets every replication not in `keys` (after a re-list).
    pub fn retain(&mut self, keys: &BTreeSet<ObjectKey>) {
        self.views.retain(|k, _| keys.contains(k));
    }

    /// The view of the only replication that claims `name`.
    fn sole_claimant(&self, name: &str) -> Option<&MasterView> {
        let mut claimed = self.views.values().filter(|v| v.name == name);
        let view = claimed.next()?;
        claimed.next().is_none().then_some(view)
    }

    /// The claimants of each master name.
    fn by_name(&self) -> BTreeMap<&str, Vec<(&ObjectKey, &MasterView)>> {
        let mut by_name: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for (key, view) in &self.views {
            by_name.entry(&view.name).or_default().push((key, view));
        }
        by_name
    }

    /// The master called `name` and its address, when exactly one replication claims the name
    /// and a master is known.
    pub fn get(&self, name: &str) -> Option<(&MasterView, &Address)> {
        let view = self.sole_claimant(name)?;
        Some((view, view.master.as_ref()?))
    }

    /// Every master that `get` answers for, by name.
    pub fn masters(&self) -> Vec<(&MasterView, &Address)> {
        self.by_name()
            .into_values()
            .filter_map(|claimants| match claimants[..] {
                [(_, view)] => Some((view, view.master.as_ref()?)),
                _ => None,
            })
            .collect()
    }

    /// Master names claimed by more than one replication, with the claimants.
    pub fn collisions(&self) -> BTreeMap<String, Vec<ObjectKey>> {
        self.by_name()
            .into_iter()
            .filter(|(_, claimants)| claimants.len() > 1)
            .map(|(name, claimants)| {
                let keys = claimants.into_iter().map(|(k, _)| k.clone()).collect();
                (name.to_string(), keys)
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{InstanceStatus, RedisReplicationStatus};

    /// A replication `ns/name` whose instance `i` has address `10.0.0.<i>:6379`.
    pub fn replication(
        ns: &str,
        name: &str,
        master: Option<u8>,
        instances: &[(u8, &str, bool)],
    ) -> RedisReplication {
        let mut rr: RedisReplication = serde_json::from_value(serde_json::json!({
            "apiVersion": "redis.vigil.dev/v1alpha1",
            "kind": "RedisReplication",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"instances": 3},
        }))
        .expect("replication");
        rr.status = Some(RedisReplicationStatus {
            phase: Some(Phase::Ready),
            current_master: master.map(|i| format!("{name}-{i}")),
            master_address: master.map(|i| format!("10.0.0.{i}:6379")),
            epoch: 1,
            instances: instances
                .iter()
                .map(|&(i, role, ready)| InstanceStatus {
                    name: format!("{name}-{i}"),
                    role: role.into(),
                    ready,
                    address: Some(format!("10.0.0.{i}:6379")),
                    replication_offset: Some(100),
                    link_status: (role == "replica").then(|| "up".to_string()),
                    ..InstanceStatus::default()
                })
                .collect(),
            ..RedisReplicationStatus::default()
        });
        rr
    }

    fn status(rr: &mut RedisReplication) -> &mut RedisReplicationStatus {
        rr.status.as_mut().expect("status")
    }

    /// `ns/cache` with master `master` and `instances` (ordinal, role, ready).
    fn cache(master: u8, instances: &[(u8, &str, bool)]) -> RedisReplication {
        replication("ns", "cache", Some(master), instances)
    }

    fn healthy_set() -> RedisReplication {
        cache(
            1,
            &[
                (1, "master", true),
                (2, "replica", true),
                (3, "replica", true),
            ],
        )
    }

    fn payloads(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{} {}", e.channel, e.payload))
            .collect()
    }

    #[test]
    fn the_default_name_is_namespace_dot_name_unless_the_spec_sets_one() {
        let mut rr = healthy_set();
        assert_eq!(master_name(&rr).as_deref(), Some("ns.cache"));
        rr.spec.sentinel_master_name = Some("mymaster".into());
        assert_eq!(master_name(&rr).as_deref(), Some("mymaster"));
    }

    #[test]
    fn a_view_lists_the_master_and_the_other_instances_as_replicas() {
        let (view, events) = MasterView::observe(&healthy_set(), None).expect("view");
        assert!(events.is_empty(), "first sight is no news");
        assert_eq!(view.master, Some(Address::new("10.0.0.1", 6379)));
        let replicas: Vec<String> = view
            .replicas
            .iter()
            .map(|r| r.address.to_string())
            .collect();
        assert_eq!(replicas, ["10.0.0.2:6379", "10.0.0.3:6379"]);
        assert!(view.replicas.iter().all(|r| r.healthy && r.link_up));
    }

    #[test]
    fn a_completed_failover_publishes_switch_master_with_old_and_new_addresses() {
        let before = healthy_set();
        let (view, _) = MasterView::observe(&before, None).expect("view");

        // The intent is recorded: the new master is named but not promoted yet.
        let mut intent = before.clone();
        status(&mut intent).phase = Some(Phase::MasterUnavailable);
        status(&mut intent).master_address = Some("10.0.0.2:6379".into());
        status(&mut intent).target_master = Some("cache-2".into());
        let (mid, events) = MasterView::observe(&intent, Some(&view)).expect("view");
        assert_eq!(mid.master, Some(Address::new("10.0.0.1", 6379)), "not yet");
        assert_eq!(
            payloads(&events),
            ["+sdown master ns.cache 10.0.0.1 6379"],
            "the phase of the intent's status is still the old one"
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
                "+switch-master ns.cache 10.0.0.1 6379 10.0.0.2 6379",
                "+sdown slave 10.0.0.1:6379 10.0.0.1 6379 @ ns.cache 10.0.0.2 6379"
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
            ["+odown master ns.cache 10.0.0.1 6379 #quorum 1/1"]
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
    fn a_name_claimed_twice_is_answered_for_neither_and_reported() {
        let mut catalog = Catalog::default();
        let mut a = healthy_set();
        a.spec.sentinel_master_name = Some("shared".into());
        let mut b = replication("other", "cache", Some(5), &[(5, "master", true)]);
        b.spec.sentinel_master_name = Some("shared".into());
        catalog.apply(&a);
        assert!(catalog.get("shared").is_some());
        catalog.apply(&b);
        assert!(catalog.get("shared").is_none());
        assert!(catalog.masters().is_empty());
        assert_eq!(
            catalog.collisions().get("shared").map(Vec::len),
            Some(2),
            "{:?}",
            catalog.collisions()
        );
        // No events for a contested name.
        let mut switched = b.clone();
        status(&mut switched).master_address = Some("10.0.0.6:6379".into());
        assert!(catalog.apply(&switched).is_empty());

        catalog.remove(&("other".into(), "cache".into()));
        assert!(catalog.get("shared").is_some());
        assert!(catalog.collisions().is_empty());
    }

    #[test]
    fn a_set_without_a_master_is_not_answered_and_a_relist_forgets_deleted_sets() {
        let mut catalog = Catalog::default();
        catalog.apply(&replication("ns", "new", None, &[]));
        catalog.apply(&healthy_set());
        assert!(catalog.get("ns.new").is_none());
        assert_eq!(catalog.masters().len(), 1);
        catalog.retain(&BTreeSet::from([("ns".to_string(), "new".to_string())]));
        assert!(catalog.get("ns.cache").is_none());
    }
}
