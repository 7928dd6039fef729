//! Keeps the catalog current from a watch on `RedisReplication`s (every replica of the operator
//! runs it, leader or not) and publishes the Sentinel events a change means.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tracing::{info, warn};

use super::Shared;
use super::catalog::{ObjectKey, key};
use crate::api::RedisReplication;

/// Runs until the process stops; watch errors are retried with backoff.
pub async fn run(client: Client, namespace: Option<String>, shared: Arc<Shared>) {
    let api: Api<RedisReplication> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Keys seen since the watch (re)started listing, to forget what was deleted meanwhile.
    let mut listing: Option<BTreeSet<ObjectKey>> = None;
    let mut collisions = BTreeMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(BTreeSet::new()),
            Ok(watcher::Event::InitApply(rr)) => {
                if let Some(seen) = &mut listing {
                    seen.insert(key(&rr));
                }
                apply(&shared, &rr);
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(seen) = listing.take() {
                    shared.catalog_mut().retain(&seen);
                }
            }
            Ok(watcher::Event::Apply(rr)) => apply(&shared, &rr),
            Ok(watcher::Event::Delete(rr)) => shared.catalog_mut().remove(&key(&rr)),
            Err(e) => {
                warn!(error = %e, "watching RedisReplications for Sentinel discovery failed; retrying");
                continue;
            }
        }
        report_collisions(&shared, &mut collisions);
    }
}

fn apply(shared: &Shared, rr: &RedisReplication) {
    let events = shared.catalog_mut().apply(rr);
    for event in events {
        info!(channel = event.channel.as_str(), payload = %event.payload, "Sentinel event");
        // No subscriber is not an error.
        let _ = shared.events.send(Arc::new(event));
    }
}

/// Logs each master name that becomes (or stops being) claimed by several replications.
fn report_collisions(shared: &Shared, reported: &mut BTreeMap<String, Vec<ObjectKey>>) {
    let current = shared.catalog().collisions();
    if current == *reported {
        return;
    }
    for (name, claimants) in &current {
        if reported.get(name) != Some(claimants) {
            let claimants: Vec<String> = claimants
                .iter()
                .map(|(ns, n)| format!("{ns}/{n}"))
                .collect();
            warn!(
                master_name = %name,
                claimants = ?claimants,
                "Sentinel master name claimed by several RedisReplications: discovery answers for \
                 none of them; give each a unique spec.sentinelMasterName"
            );
        }
    }
    for name in reported.keys().filter(|n| !current.contains_key(*n)) {
        info!(master_name = %name, "Sentinel master name is unique again");
    }
    *reported = current;
}
