//! What discovery knows about each `RedisReplication`, derived from its status alone (and the
//! time it was seen). The events a change of view means are `events`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use kube::ResourceExt;

use super::events::{self, Event};
use crate::api::{InstanceRole, LinkStatus, Phase, RedisReplication};
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
    /// The replication's namespace.
    pub namespace: String,
    /// When this view was taken from the status: the status is what the operator's probes saw.
    pub observed: Instant,
    /// The master clients should use: the recorded one, which a failover's intent names before
    /// the promotion. Sentinel switches only after it, but here the old master may be back
    /// (fenced, then demoted) before the status says the promotion is done: a client that
    /// reconnected to it in that window would stay on a replica. A client that reaches the new
    /// master early is disconnected by its promotion (safety rule 6) and comes back.
    pub master: Option<Address>,
    /// The recorded master is unavailable (`phase: MasterUnavailable`).
    pub down: bool,
    /// Since when it is, as discovery saw it.
    pub down_since: Option<Instant>,
    pub failing_over: bool,
    pub epoch: i64,
    pub down_after_milliseconds: i64,
    /// Every other instance with an address.
    pub replicas: Vec<ReplicaView>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaView {
    pub address: Address,
    pub role: InstanceRole,
    /// A ready replica: linked to its master and synced.
    pub healthy: bool,
    pub link_up: bool,
    pub offset: i64,
    /// `+slave` was published for it (or it was there when discovery first saw the set).
    pub announced: bool,
    /// The master switched since it last was healthy: `+slave-reconf-done` is due once it is.
    pub reconfiguring: bool,
}

impl MasterView {
    /// The view of `rr` after `previous` (its last view), and the events between the two.
    pub fn observe(rr: &RedisReplication, previous: Option<&Self>) -> Option<(Self, Vec<Event>)> {
        let name = master_name(rr)?;
        let previous = previous.filter(|p| p.name == name);
        let status = rr.status.clone().unwrap_or_default();
        let recorded = status.master_address.as_deref().and_then(Address::parse);
        let failing_over = status.target_master.is_some();
        let master = recorded;
        let switched = previous.is_some_and(|p| p.master.is_some() && p.master != master);
        let replicas = status
            .instances
            .iter()
            .filter_map(|i| {
                let address = Address::parse(i.address.as_deref()?)?;
                if Some(&address) == master.as_ref() {
                    return None;
                }
                let role = i.role;
                let healthy = role == InstanceRole::Replica && i.ready;
                let before = previous.and_then(|p| p.replica(&address));
                let announced = match (previous, before) {
                    (Some(_), Some(before)) => before.announced || healthy,
                    (Some(p), None) => healthy || p.master.as_ref() == Some(&address),
                    // Discovery's first sight of a set is no news; later arrivals are.
                    (None, _) => true,
                };
                // A replica of the old master must follow the new one; the old master itself
                // rejoins as a new replica (`-sdown`), not a reconfigured one.
                let reconfiguring = before.is_some_and(|b| switched || b.reconfiguring) && !healthy;
                Some(ReplicaView {
                    address,
                    role,
                    healthy,
                    link_up: i.link_status == Some(LinkStatus::Up),
                    offset: i.replication_offset.unwrap_or(0),
                    announced,
                    reconfiguring,
                })
            })
            .collect();
        // A fenced or hibernated master takes no writes either: clients are told it is down.
        let down = matches!(
            status.phase,
            Some(Phase::MasterUnavailable | Phase::Fenced | Phase::Hibernated)
        );
        let now = Instant::now();
        let view = Self {
            name,
            namespace: rr.namespace().unwrap_or_default(),
            observed: now,
            master,
            down,
            down_since: down.then(|| previous.and_then(|p| p.down_since).unwrap_or(now)),
            failing_over,
            epoch: status.epoch,
            down_after_milliseconds: rr.spec.failover.down_after_milliseconds,
            replicas,
        };
        let events = previous
            .map(|p| events::between(p, &view))
            .unwrap_or_default();
        Some((view, events))
    }

    pub fn replica(&self, address: &Address) -> Option<&ReplicaView> {
        self.replicas.iter().find(|r| &r.address == address)
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
                    // The status's own words, as the fixtures name them.
                    role: serde_json::from_value(serde_json::json!(role)).expect("role"),
                    ready,
                    address: Some(format!("10.0.0.{i}:6379")),
                    replication_offset: Some(100),
                    link_status: (role == "replica").then_some(LinkStatus::Up),
                    ..InstanceStatus::default()
                })
                .collect(),
            ..RedisReplicationStatus::default()
        });
        rr
    }

    pub fn status(rr: &mut RedisReplication) -> &mut RedisReplicationStatus {
        rr.status.as_mut().expect("status")
    }

    /// `ns/cache` with master `master` and `instances` (ordinal, role, ready).
    pub fn cache(master: u8, instances: &[(u8, &str, bool)]) -> RedisReplication {
        replication("ns", "cache", Some(master), instances)
    }

    pub fn healthy_set() -> RedisReplication {
        cache(
            1,
            &[
                (1, "master", true),
                (2, "replica", true),
                (3, "replica", true),
            ],
        )
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
