//! Pod addresses: one address N.N.N.x per pod from a /24, added as a /32 to `lo` so a process
//! can bind it without any other network setup. The apiserver refuses loopback (127/8) and
//! link-local addresses in EndpointSlices, so the tests run the cluster inside a private network
//! namespace and use a private /24 there (10.244.0.0/24 by default); 127.0.0.0/24 still works,
//! without endpoints, and needs no address added.
//!
//! Allocation goes round-robin from `--ip-range-start` rather than lowest-free: a new pod then
//! rarely gets the address a just-deleted pod had, which would hide stale-IP bugs in what runs on
//! top (a real CNI also avoids immediate reuse).

use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Debug)]
pub struct Ipam {
    /// The first three octets of the pod network.
    network: [u8; 3],
    start: u8,
    next: u8,
    /// address -> pod UID
    used: HashMap<Ipv4Addr, String>,
}

impl Ipam {
    pub fn new(network: [u8; 3], start: u8) -> Self {
        let start = start.clamp(2, 254);
        Ipam {
            network,
            start,
            next: start,
            used: HashMap::new(),
        }
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        let [a, b, c, d] = ip.octets();
        [a, b, c] == self.network && d >= self.start && d <= 254
    }

    /// The pod's address: the one it already holds, else `preferred` (the address in its status
    /// from a previous run of the stand-in, since pod IPs never change in Kubernetes) if free,
    /// else the next free one. `None` when the range is exhausted.
    pub fn allocate(&mut self, uid: &str, preferred: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some((ip, _)) = self.used.iter().find(|(_, owner)| *owner == uid) {
            return Some(*ip);
        }
        if let Some(ip) = preferred
            && self.in_range(ip)
            && !self.used.contains_key(&ip)
        {
            self.used.insert(ip, uid.to_string());
            return Some(ip);
        }
        let span = 255 - self.start as u16;
        for i in 0..span {
            let octet = self.start as u16 + (self.next as u16 - self.start as u16 + i) % span;
            let [a, b, c] = self.network;
            let ip = Ipv4Addr::new(a, b, c, octet as u8);
            if let std::collections::hash_map::Entry::Vacant(slot) = self.used.entry(ip) {
                slot.insert(uid.to_string());
                self.next = if octet >= 254 {
                    self.start
                } else {
                    octet as u8 + 1
                };
                return Some(ip);
            }
        }
        None
    }

    /// Marks an address as taken by a pod before its worker runs (at startup, so that new pods
    /// do not grab the address of an existing one).
    pub fn reserve(&mut self, uid: &str, ip: Ipv4Addr) {
        if self.in_range(ip)
            && !self.used.contains_key(&ip)
            && !self.used.values().any(|o| o == uid)
        {
            self.used.insert(ip, uid.to_string());
        }
    }

    pub fn release(&mut self, uid: &str) {
        self.used.retain(|_, owner| owner != uid);
    }
}

/// Parses `a.b.c.0/24` into its first three octets.
pub fn parse_network(cidr: &str) -> Result<[u8; 3], String> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr}: expected a.b.c.0/24"))?;
    let ip: Ipv4Addr = addr.parse().map_err(|e| format!("{cidr}: {e}"))?;
    if len != "24" || ip.octets()[3] != 0 {
        return Err(format!("{cidr}: only a /24 ending in .0 is supported"));
    }
    let [a, b, c, _] = ip.octets();
    Ok([a, b, c])
}

/// Makes `ip` bindable: adds it to `lo` as a /32 (loopback addresses already are).
pub fn attach(ip: Ipv4Addr) -> Result<(), String> {
    if ip.is_loopback() {
        return Ok(());
    }
    let out = std::process::Command::new("ip")
        .args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"])
        .output()
        .map_err(|e| format!("running `ip addr replace {ip}/32 dev lo`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip addr replace {ip}/32 dev lo` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes an address added by [`attach`]; a missing one is fine.
pub fn detach(ip: Ipv4Addr) {
    if ip.is_loopback() {
        return;
    }
    let _ = std::process::Command::new("ip")
        .args(["addr", "del", &format!("{ip}/32"), "dev", "lo"])
        .output();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse() {
        assert_eq!(parse_network("10.244.0.0/24"), Ok([10, 244, 0]));
        assert!(parse_network("10.244.0.0/16").is_err());
        assert!(parse_network("10.244.0.1/24").is_err());
        assert!(parse_network("nope").is_err());
    }

    #[test]
    fn allocates_in_the_configured_network() {
        let mut ipam = Ipam::new([10, 244, 0], 10);
        assert_eq!(
            ipam.allocate("a", None),
            Some(Ipv4Addr::new(10, 244, 0, 10))
        );
        assert_eq!(
            ipam.allocate("b", Some(Ipv4Addr::new(127, 0, 0, 11))),
            Some(Ipv4Addr::new(10, 244, 0, 11)),
            "a preferred address outside the network is not used"
        );
    }

    #[test]
    fn round_robin_without_immediate_reuse() {
        let mut ipam = Ipam::new([127, 0, 0], 10);
        assert_eq!(ipam.allocate("a", None), Some(Ipv4Addr::new(127, 0, 0, 10)));
        assert_eq!(ipam.allocate("b", None), Some(Ipv4Addr::new(127, 0, 0, 11)));
        assert_eq!(
            ipam.allocate("a", None),
            Some(Ipv4Addr::new(127, 0, 0, 10)),
            "stable per pod"
        );
        ipam.release("a");
        assert_eq!(ipam.allocate("c", None), Some(Ipv4Addr::new(127, 0, 0, 12)));
    }

    #[test]
    fn preferred_and_reserved() {
        let mut ipam = Ipam::new([127, 0, 0], 10);
        ipam.reserve("old", Ipv4Addr::new(127, 0, 0, 10));
        assert_eq!(
            ipam.allocate("new", None),
            Some(Ipv4Addr::new(127, 0, 0, 11))
        );
        assert_eq!(
            ipam.allocate("back", Some(Ipv4Addr::new(127, 0, 0, 50))),
            Some(Ipv4Addr::new(127, 0, 0, 50))
        );
        // A preferred address that is taken or out of range is not used.
        assert_eq!(
            ipam.allocate("x", Some(Ipv4Addr::new(127, 0, 0, 10))),
            Some(Ipv4Addr::new(127, 0, 0, 12))
        );
        assert_eq!(
            ipam.allocate("y", Some(Ipv4Addr::new(10, 0, 0, 1))),
            Some(Ipv4Addr::new(127, 0, 0, 13))
        );
    }

    #[test]
    fn wraps_and_exhausts() {
        let mut ipam = Ipam::new([127, 0, 0], 253);
        assert!(ipam.allocate("a", None).is_some());
        assert!(ipam.allocate("b", None).is_some());
        assert_eq!(ipam.allocate("c", None), None);
        ipam.release("a");
        assert_eq!(
            ipam.allocate("c", None),
            Some(Ipv4Addr::new(127, 0, 0, 253))
        );
    }
}
