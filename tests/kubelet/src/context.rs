//! Settings and shared state every pod worker needs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Client;

use crate::fieldpath::PodFacts;
use crate::ipam::Ipam;
use crate::layout::Layout;

pub struct Context {
    pub client: Client,
    pub node_name: String,
    pub layout: Layout,
    /// Stand-ins for image filesystems: where container commands are looked up first.
    pub bin_dirs: Vec<PathBuf>,
    /// The stand-in's own PATH, the last place commands are looked up.
    pub search_path: String,
    pub apiserver_host: String,
    pub apiserver_port: u16,
    /// The node's address; every pod's hostIP.
    pub host_ip: String,
    pub node_allocatable: BTreeMap<String, Quantity>,
    /// `kube-probe/<major>.<minor>`, as the kubelet sends.
    pub probe_user_agent: String,
    /// Grace given to containers when the stand-in itself is stopped.
    pub shutdown_grace: Duration,
    pub ipam: Mutex<Ipam>,
}

impl Context {
    /// Locks the address allocator. A poisoned lock only means another task panicked while
    /// holding it; the map itself is still consistent, so keep going.
    pub fn ipam(&self) -> std::sync::MutexGuard<'_, Ipam> {
        self.ipam.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The downward API facts of a pod with address `pod_ip` on this node.
    pub fn pod_facts(&self, pod_ip: Option<Ipv4Addr>) -> PodFacts {
        PodFacts {
            pod_ip: pod_ip.map(|ip| ip.to_string()),
            host_ip: self.host_ip.clone(),
            node_allocatable: self.node_allocatable.clone(),
        }
    }
}
