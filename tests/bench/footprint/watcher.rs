//! The peer of the footprint: one stock `redis-sentinel` watching the masters of the step's
//! replications, as a Sentinel deployment would watch them: the same instances, the same
//! down-after, each master's own password (`auth-pass`), quorum 1 (it is alone). It finds the
//! replicas itself from the masters' `INFO`, as Sentinel does.

use std::collections::HashMap;
use std::path::Path;

use tokio::process::Child;

use crate::sys::redis_cmd;

/// Its own address on `lo`, apart from the failover comparison's (10.245.1-2.x).
const IP: &str = "10.245.200.1";
const PORT: u16 = 26379;

/// A master for the sentinel to monitor.
pub struct Watched {
    pub name: String,
    pub ip: String,
    pub password: String,
}

pub struct Watcher {
    child: Child,
    pub pid: u32,
}

impl Watcher {
    pub fn start(dir: &Path, masters: &[Watched], down_after_ms: u64) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("footprint sentinel dir");
        crate::sentinel::add_address(IP);
        let mut conf = format!(
            "bind {IP}\nport {PORT}\nprotected-mode no\ndaemonize no\nlogfile \"\"\ndir \"{}\"\n",
            dir.display()
        );
        for m in masters {
            conf.push_str(&format!(
                "sentinel monitor {n} {ip} 6379 1\nsentinel auth-pass {n} {pw}\n\
                 sentinel down-after-milliseconds {n} {down_after_ms}\n",
                n = m.name,
                ip = m.ip,
                pw = m.password,
            ));
        }
        let path = dir.join("sentinel.conf");
        std::fs::write(&path, conf).expect("write sentinel.conf");
        let bin = crate::sentinel::binary("REDIS_SENTINEL", "redis-sentinel");
        let child = crate::sentinel::spawn_logged(&bin, &path, &dir.join("sentinel.log"));
        let pid = child.id().expect("the sentinel's pid");
        Self { child, pid }
    }

    /// Ok once every master is watched as up, linked, with `replicas` replicas found.
    pub async fn watching(&self, masters: usize, replicas: usize) -> Result<(), String> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("masters");
        let reply: Vec<Vec<String>> = redis_cmd(IP, PORT, None, &cmd).await?;
        let ready = reply
            .iter()
            .filter(|fields| {
                let f: HashMap<&str, &str> = fields
                    .chunks(2)
                    .filter_map(|kv| Some((kv.first()?.as_str(), kv.get(1)?.as_str())))
                    .collect();
                f.get("flags") == Some(&"master")
                    && f.get("num-slaves").and_then(|n| n.parse::<usize>().ok()) == Some(replicas)
            })
            .count();
        if ready == masters {
            Ok(())
        } else {
            Err(format!(
                "{ready} of {masters} masters watched with {replicas} replicas each"
            ))
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
