//! The client both systems are measured with: redis-py's Sentinel support
//! (tests/clients/py-failover/failover.py), finding the master only through the Sentinel endpoints
//! it is given and writing continuously, one stamped line per write.

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::support::clients::clients_dir;

/// Pause between two successful writes, and after a failed one (seconds).
const INTERVAL: &str = "0.01";
const RETRY_INTERVAL: &str = "0.02";

/// What the system under test tells the writer.
pub struct Target<'a> {
    /// `host:port,host:port...` of the Sentinel endpoints.
    pub endpoints: &'a str,
    pub master_name: &'a str,
    pub password: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: `OK` (plain) or `WAIT 1` said a replica has it.
    Ok,
    /// `--wait 1` only: the master took it but no replica acknowledged it in time.
    Unacked,
    Err,
}

/// One line of the writer.
#[derive(Clone, Debug)]
pub struct Write {
    /// `time.monotonic()` when the reply or error arrived.
    pub at: f64,
    pub outcome: Outcome,
    pub index: u64,
    /// `ip:port` of the server that took it (not for errors).
    pub addr: String,
}

fn parse(line: &str) -> Option<Write> {
    let mut parts = line.splitn(4, ' ');
    let at = parts.next()?.parse().ok()?;
    let outcome = match parts.next()? {
        "ok" => Outcome::Ok,
        "unacked" => Outcome::Unacked,
        "err" => Outcome::Err,
        _ => return None,
    };
    let index = parts.next()?.parse().ok()?;
    let addr = match outcome {
        Outcome::Err => String::new(),
        _ => parts.next()?.to_string(),
    };
    Some(Write {
        at,
        outcome,
        index,
        addr,
    })
}

/// A running writer; killed when dropped.
pub struct Writer {
    child: Child,
    lines: Arc<Mutex<Vec<Write>>>,
}

impl Writer {
    /// Starts a writer of keys `<key_prefix>:<i>`; with `wait_one` a write counts only once
    /// `WAIT 1` says a replica has it. Its stderr goes to `log`.
    /// Its stdout is kept next to `log`, with the extension `.out`.
    pub fn start(target: &Target<'_>, key_prefix: &str, wait_one: bool, log: &Path) -> Self {
        let mut cmd = Command::new(clients_dir().join("python-redis"));
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/py-failover/failover.py"
        ))
        .args(["--sentinel", target.endpoints])
        .args(["--master", target.master_name])
        .args(["--password", target.password])
        .args(["--mode", "write", "--timestamps", "--duration", "300"])
        .args(["--interval", INTERVAL, "--retry-interval", RETRY_INTERVAL])
        .args(["--key-prefix", key_prefix]);
        if wait_one {
            cmd.args(["--wait", "1"]);
        }
        let stderr = std::fs::File::create(log).expect("writer log");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the writer ({cmd:?}): {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let mut raw = std::fs::File::create(log.with_extension("out")).expect("writer output");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(raw, "{line}");
                if let Some(w) = parse(&line) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(w);
                }
            }
        });
        Self { child, lines }
    }

    pub fn writes(&self) -> Vec<Write> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Acknowledged writes taken by `addr` (`ip:port`) after `since` (monotonic seconds).
    pub fn acks_on(&self, addr: &str, since: f64) -> usize {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|w| w.outcome == Outcome::Ok && w.addr == addr && w.at > since)
            .count()
    }

    /// The last few lines, for failure messages.
    pub fn tail(&self) -> String {
        let lines = self.writes();
        let from = lines.len().saturating_sub(3);
        lines[from..]
            .iter()
            .map(|w| format!("{:.3} {:?} {} {}", w.at, w.outcome, w.index, w.addr))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Stops the writer; returns everything it wrote.
    pub fn stop(mut self) -> Vec<Write> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends with the pipe; what it already collected is complete enough:
        // every line before the kill was flushed by the writer.
        self.writes()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The write gap seen by one writer across a change of master from `old` to `new` (`ip:port`)
/// that began at `start`: from its last acknowledged write on the old master to its first on the
/// new one after `start`, and when that first one came. When the old master became the master
/// again (promoted back after another), its last write is the last one before `start`. None when
/// the writer saw no acknowledged write on one of them.
pub fn gap(writes: &[Write], old: &str, new: &str, start: f64) -> Option<(f64, f64)> {
    let acks = |addr: &str| -> Vec<f64> {
        writes
            .iter()
            .filter(|w| w.outcome == Outcome::Ok && w.addr == addr)
            .map(|w| w.at)
            .collect()
    };
    let first_new = acks(new)
        .into_iter()
        .filter(|at| *at > start)
        .reduce(f64::min)?;
    let last_old = acks(old)
        .into_iter()
        .filter(|at| *at < first_new && (old != new || *at <= start))
        .reduce(f64::max)?;
    Some((first_new - last_old, first_new))
}

/// The keys of every acknowledged write.
pub fn acknowledged_keys(writes: &[Write], prefix: &str) -> Vec<String> {
    writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok)
        .map(|w| format!("{prefix}:{}", w.index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        let w = parse("12.5 ok 3 10.0.0.1:6379").expect("ok line");
        assert_eq!((w.at, w.outcome, w.index), (12.5, Outcome::Ok, 3));
        assert_eq!(w.addr, "10.0.0.1:6379");
        let e = parse("13.0 err 4 ConnectionError: Error 111 connecting").expect("err line");
        assert_eq!(e.outcome, Outcome::Err);
        assert!(
            parse("ok 3 10.0.0.1:6379").is_none(),
            "unstamped lines are not ours"
        );
    }

    #[test]
    fn the_gap_spans_the_last_write_on_the_old_master_to_the_first_on_the_new() {
        let w = |at, outcome, addr: &str| Write {
            at,
            outcome,
            index: 0,
            addr: addr.into(),
        };
        let writes = [
            w(1.0, Outcome::Ok, "a"),
            w(1.1, Outcome::Ok, "a"),
            w(1.2, Outcome::Err, ""),
            w(2.0, Outcome::Unacked, "b"),
            w(2.5, Outcome::Ok, "b"),
            w(2.6, Outcome::Ok, "b"),
        ];
        let (gap, first) = gap(&writes, "a", "b", 1.15).expect("a gap");
        assert!((gap - 1.4).abs() < 1e-9 && (first - 2.5).abs() < 1e-9);
        assert!(super::gap(&writes, "a", "c", 1.15).is_none());
        // Promoted back: the gap runs from the last write before the change.
        let back = [
            w(1.0, Outcome::Ok, "a"),
            w(1.1, Outcome::Ok, "a"),
            w(3.0, Outcome::Ok, "a"),
        ];
        let (gap, _) = super::gap(&back, "a", "a", 1.15).expect("a gap");
        assert!((gap - 1.9).abs() < 1e-9);
    }
}
