//! One measured change of master, the same for both systems: writers running through Sentinel
//! discovery, then a fault of the master ([`Change`]) or a planned switchover, then the figures
//! read from the writers' stamped lines and from the instances themselves.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::partition::Cut;
use crate::support::wait_for;
use crate::sys::{Seen, mono_now, redis_cmd};
use crate::writer::{self, Target, Writer};

/// One Redis instance of a set.
#[derive(Clone, Debug)]
pub struct Instance {
    pub name: String,
    pub ip: String,
}

impl Instance {
    pub fn addr(&self) -> String {
        format!("{}:6379", self.ip)
    }
}

/// A master/replica set of three with something keeping watch over it.
pub(crate) trait System {
    fn label(&self) -> &'static str;
    /// Sentinel endpoints for the client, `host:port[,host:port...]`.
    fn endpoints(&self) -> String;
    fn master_name(&self) -> String;
    fn password(&self) -> String;
    /// The instances as they are now (a rolling update replaces them, with new addresses).
    async fn instances(&self) -> Vec<Instance>;
    /// Where the writers' logs go.
    fn artifacts(&self) -> PathBuf;
    /// Ok with the master once the set is healthy and the system ready to act again (every
    /// replica linked, every watcher agreeing, rate limits passed); else what is not yet.
    async fn stable(&self) -> Result<Instance, String>;
    /// Waits for [`System::stable`]; panics after a bound.
    async fn wait_stable(&self) -> Instance {
        stable_with(
            self,
            &format!("the {} set to be stable", self.label()),
            |_| true,
        )
        .await
    }
    /// SIGKILL of the master's process; its supervisor restarts it with back-off.
    fn crash(&self, master: &Instance);
    /// SIGSTOP of the master's processes (`resume`: SIGCONT): silent, and still there.
    fn freeze(&self, master: &Instance);
    fn resume(&self, master: &Instance);
    /// Cuts the master off from everything (iptables rules, removed when the guard drops): the
    /// replicas, the watchers and the clients are on the other side. Its process runs on, and
    /// whatever keeps it alive locally still reaches it (vigil: the kubelet's probes).
    fn cut_off(&self, master: &Instance) -> Cut;
    /// Stops the master gracefully, as Kubernetes deletes a pod (vigil: the pod is deleted with
    /// its grace period and replaced by a new one; Sentinel: SIGTERM, and its supervisor
    /// restarts it with no restart history, as a new pod has none).
    async fn delete(&self, master: &Instance);
    /// Asks for a planned switchover away from `master` (to `target` where the system lets the
    /// user choose).
    async fn switchover(&self, master: &Instance, target: &Instance);
    /// Asks for a switchover from `master` to `target` and no other replica, unmeasured (the
    /// repeat crash's set-up). Returns once the request is made (Sentinel: once `target` is
    /// master, as it has to steer the choice).
    async fn switch_to(&self, master: &Instance, target: &Instance);
    /// Changes the spec so that every instance is replaced, the master last after a handover
    /// (vigil only: Sentinel has no such thing).
    async fn roll(&self);
    /// Ok once the system names `master_ip` as the master to its clients and has finished.
    async fn names_master(&self, master_ip: &str) -> Result<(), String>;
    /// Gives a crashed instance a fresh restart history, as a new pod has (vigil: the pod is
    /// replaced; Sentinel: its supervisor forgets the back-off), so that every crash run starts
    /// from the same history (a first crash; the repeat crash's second): under the kubelet's
    /// doubling back-off, the third crash of one pod would take minutes to rejoin.
    async fn renew(&self, instance: &Instance);
}

/// Every change, in the order the benchmark makes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The master's process is SIGKILLed.
    Crash,
    /// The master's process is SIGKILLed a second time within its restart back-off: it crashed
    /// once (unmeasured), rejoined as a replica and was made master again.
    RepeatCrash,
    /// The master's processes are SIGSTOPped (resumed once the system names a new master).
    Freeze,
    /// The master is cut off from everything, clients included (healed once the system names
    /// a new master).
    Partition,
    /// The master is stopped gracefully: its pod deleted (vigil), SIGTERM (Sentinel).
    Delete,
    /// A planned switchover.
    Switchover,
    /// A spec change that replaces every pod; measured: the master's handover (vigil only).
    RollingUpdate,
}

impl Change {
    pub const ALL: [Change; 7] = [
        Change::Crash,
        Change::RepeatCrash,
        Change::Freeze,
        Change::Partition,
        Change::Delete,
        Change::Switchover,
        Change::RollingUpdate,
    ];

    /// Its name in BENCH_PARTS.
    pub fn part(self) -> &'static str {
        match self {
            Change::Crash => "failover",
            Change::RepeatCrash => "repeat-crash",
            Change::Freeze => "freeze",
            Change::Partition => "partition",
            Change::Delete => "delete",
            Change::Switchover => "switchover",
            Change::RollingUpdate => "rolling",
        }
    }

    /// Its name in the runs' tags (keys, logs).
    pub fn tag(self) -> &'static str {
        match self {
            Change::Crash => "crash",
            other => other.part(),
        }
    }

    /// Whether Sentinel goes through it too.
    pub fn both(self) -> bool {
        self != Change::RollingUpdate
    }

    /// A change the system is asked for: no detection timeout plays a part, so it is measured
    /// with the first one only, BENCH_SWITCHOVER_RUNS times.
    pub fn planned(self) -> bool {
        matches!(self, Change::Switchover | Change::RollingUpdate)
    }
}

/// The figures of one run; times in seconds.
#[derive(Clone, Debug)]
pub struct Run {
    pub from: String,
    pub to: String,
    /// Last acknowledged write on the old master to the first on the new, per writer.
    pub gap_plain: f64,
    pub gap_wait: f64,
    /// The crash (or request) to the first acknowledged write on the new master (plain writer).
    pub to_first_write: f64,
    /// The crash (or request) to the first poll that saw the new master take the role: the
    /// system's own figure, without the client's timeouts and retries in it (up to a poll late).
    pub promoted: f64,
    /// The crash (or request) to the replica that was neither old nor new master following the
    /// new one with its link up.
    pub survivor_follows: f64,
    /// ... and to every instance, the old master included, following it.
    pub all_follow: f64,
    pub acked_plain: usize,
    pub lost_plain: usize,
    pub acked_wait: usize,
    pub lost_wait: usize,
    /// Replicas seen promoted during the run: more than one when the system failed over again
    /// (or promoted one replica, then another) before settling.
    pub promotions: usize,
}

/// How long a set may take to become stable.
const STABLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Acknowledged writes each writer must see on a master before the change, and after it.
const WRITES_AROUND: usize = 20;
/// How long one run may take from the change to the end of measuring.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the instances are polled.
const POLL: Duration = Duration::from_millis(50);
/// How long one poll waits for an instance: a healthy one on this machine answers within a few
/// milliseconds; one that does not is seen down this time.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Runs one change on `system` and measures it; `tag` names the run's keys and logs.
pub async fn run<S: System>(system: &S, change: Change, tag: &str) -> Run {
    let master = match change {
        Change::RepeatCrash => crash_then_switch_back(system, tag).await,
        _ => system.wait_stable().await,
    };
    let instances = system.instances().await;
    let endpoints = system.endpoints();
    let master_name = system.master_name();
    let password = system.password();
    let target = Target {
        endpoints: &endpoints,
        master_name: &master_name,
        password: &password,
    };
    let logs = system.artifacts();
    let plain = Writer::start(
        &target,
        &format!("bench:{tag}:plain"),
        false,
        &logs.join(format!("writer-{tag}-plain.log")),
    );
    let waiting = Writer::start(
        &target,
        &format!("bench:{tag}:wait"),
        true,
        &logs.join(format!("writer-{tag}-wait.log")),
    );
    let old = master.addr();
    wait_for(
        &format!("{tag}: both writers acknowledged on the master {old}"),
        Duration::from_secs(60),
        || {
            let state = (plain.acks_on(&old, 0.0), waiting.acks_on(&old, 0.0));
            let tails = format!("plain: {}; wait: {}", plain.tail(), waiting.tail());
            async move {
                if state.0 >= WRITES_AROUND && state.1 >= WRITES_AROUND {
                    Ok(())
                } else {
                    Err(format!("{state:?} acknowledged; {tails}"))
                }
            }
        },
    )
    .await;

    // The switchover target: the replica with the highest ordinal (vigil), ignored by Sentinel,
    // which picks one itself.
    let target_instance = instances
        .iter()
        .rev()
        .find(|i| i.ip != master.ip)
        .expect("a replica")
        .clone();
    // A partition's rules, removed once the system names a new master, and however the run ends.
    let mut cut: Option<Cut> = None;
    let mut start = mono_now();
    match change {
        Change::Crash | Change::RepeatCrash => system.crash(&master),
        Change::Freeze => system.freeze(&master),
        Change::Partition => {
            cut = Some(system.cut_off(&master));
            // Timed from when the rules are in: finding a pod's sandbox takes a moment.
            start = mono_now();
        }
        Change::Delete => system.delete(&master).await,
        Change::Switchover => system.switchover(&master, &target_instance).await,
        Change::RollingUpdate => system.roll().await,
    }

    // The master is whichever instance reports the role, the old one excluded until it has been
    // seen without it (a switched-over master keeps it for a while). Should the system promote
    // one replica and then another, the figures are those of the last one. Instances are known
    // by name: a rolling update gives them new addresses.
    let mut old_left = false;
    let mut new: Option<Instance> = None;
    let mut promotions = 0;
    let mut promoted_at = None;
    let mut faulted = matches!(change, Change::Freeze | Change::Partition);
    let mut survivor_at = None;
    let mut all_at = None;
    let mut last_state = String::new();
    loop {
        let now = mono_now();
        if now - start > RUN_TIMEOUT.as_secs_f64() {
            panic!(
                "{tag}: {} did not complete a change of master in {RUN_TIMEOUT:?}; last seen: \
                 {last_state}; writers: plain: {}; wait: {}",
                system.label(),
                plain.tail(),
                waiting.tail()
            );
        }
        let current = system.instances().await;
        // Each answer timed as it comes, and bounded: a frozen or cut-off instance would hold
        // the whole poll for its timeout (0.8 s), and every figure seen by polling with it.
        let answers = futures::future::join_all(current.iter().map(|i| async {
            let seen = tokio::time::timeout(POLL_TIMEOUT, Seen::of(&i.ip, &password))
                .await
                .unwrap_or_else(|_| Seen::Down(format!("no answer in {POLL_TIMEOUT:?}")));
            (seen, mono_now())
        }))
        .await;
        let (seen, seen_at): (Vec<Seen>, Vec<f64>) = answers.into_iter().unzip();
        last_state = current
            .iter()
            .zip(&seen)
            .map(|(i, s)| format!("{}: {s:?}", i.name))
            .collect::<Vec<_>>()
            .join(", ");
        old_left |= !current
            .iter()
            .zip(&seen)
            .any(|(i, s)| i.name == master.name && *s == Seen::Master);
        let masters: Vec<&Instance> = current
            .iter()
            .zip(&seen)
            .filter(|(i, s)| **s == Seen::Master && (old_left || i.name != master.name))
            .map(|(i, _)| i)
            .collect();
        if let [one] = masters[..]
            && new.as_ref().is_none_or(|n| n.ip != one.ip)
        {
            new = Some(one.clone());
            promoted_at = current
                .iter()
                .position(|i| i.ip == one.ip)
                .map(|n| seen_at[n]);
            promotions += 1;
            survivor_at = None;
            all_at = None;
        }
        // The freeze or partition ends once a new master is up and the system names it to its
        // clients: "every replica follows" then includes the old master's return. Ended at
        // the promotion alone, the old master came back before a Sentinel set had moved its
        // clients, and took writes it then lost.
        if faulted
            && let Some(new) = &new
            && system.names_master(&new.ip).await.is_ok()
        {
            faulted = false;
            match change {
                Change::Freeze => system.resume(&master),
                Change::Partition => drop(cut.take()),
                _ => {}
            }
        }
        if let Some(new) = &new {
            // Every instance but the new master (and but the old one) follows the new master;
            // all of them there (a rolling update has one pod missing at times).
            let follow = |with_old: bool| {
                current.len() == instances.len()
                    && current
                        .iter()
                        .zip(&seen)
                        .filter(|(i, _)| i.name != new.name && (with_old || i.name != master.name))
                        .all(|(_, s)| s.follows(&new.ip))
            };
            if survivor_at.is_none() && follow(false) {
                survivor_at = Some(now);
            }
            if all_at.is_none() && follow(true) {
                all_at = Some(now);
            }
            let addr = new.addr();
            if all_at.is_some()
                && plain.acks_on(&addr, start) >= WRITES_AROUND
                && waiting.acks_on(&addr, start) >= WRITES_AROUND
            {
                match system.names_master(&new.ip).await {
                    Ok(()) => break,
                    Err(e) => last_state = format!("{last_state}; {} says {e}", system.label()),
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let new = new.expect("a new master");
    let (plain_writes, wait_writes) = (plain.stop(), waiting.stop());
    let new_addr = new.addr();
    let (gap_plain, first_plain) = writer::gap(&plain_writes, &old, &new_addr, start)
        .unwrap_or_else(|| panic!("{tag}: the plain writer's writes on {old} and {new_addr}"));
    let (gap_wait, _) = writer::gap(&wait_writes, &old, &new_addr, start)
        .unwrap_or_else(|| panic!("{tag}: the WAIT 1 writer's writes on {old} and {new_addr}"));
    let acked_plain = writer::acknowledged_keys(&plain_writes, &format!("bench:{tag}:plain"));
    let acked_wait = writer::acknowledged_keys(&wait_writes, &format!("bench:{tag}:wait"));
    let lost_plain = missing(&new.ip, &password, &acked_plain).await;
    let lost_wait = missing(&new.ip, &password, &acked_wait).await;
    if matches!(change, Change::Crash | Change::RepeatCrash | Change::Freeze) {
        system.renew(&master).await;
    }
    Run {
        from: master.name.clone(),
        to: new.name.clone(),
        gap_plain,
        gap_wait,
        to_first_write: first_plain - start,
        promoted: promoted_at.expect("measured") - start,
        survivor_follows: survivor_at.expect("measured") - start,
        all_follow: all_at.expect("measured") - start,
        acked_plain: acked_plain.len(),
        lost_plain,
        acked_wait: acked_wait.len(),
        lost_wait,
        promotions,
    }
}

/// The repeat crash's set-up, unmeasured: the master crashes (its first crash: restarted at
/// once); once the set has failed over and the crashed instance is back as a replica, the master
/// is switched back to it. Returns it, master again with a crash in its restart history, so
/// that its next crash waits out the back-off (no `renew` in between).
async fn crash_then_switch_back<S: System>(system: &S, tag: &str) -> Instance {
    let first = system.wait_stable().await;
    system.crash(&first);
    let other = stable_with(
        system,
        &format!(
            "{tag}: a new master after {}'s first crash, and it back as a replica",
            first.name
        ),
        |m| m.name != first.name,
    )
    .await;
    system.switch_to(&other, &first).await;
    stable_with(
        system,
        &format!("{tag}: {} master again", first.name),
        |m| m.name == first.name,
    )
    .await
}

/// Waits until `system` is stable with a master that `wanted` accepts; panics after a bound,
/// saying `what` it waited for.
async fn stable_with<S: System + ?Sized>(
    system: &S,
    what: &str,
    wanted: impl Fn(&Instance) -> bool,
) -> Instance {
    wait_for(what, STABLE_TIMEOUT, || async {
        let master = system.stable().await?;
        if wanted(&master) {
            Ok(master)
        } else {
            Err(format!("stable, with {} as the master", master.name))
        }
    })
    .await
}

/// How many of `keys` the master at `ip` does not hold.
async fn missing(ip: &str, password: &str, keys: &[String]) -> usize {
    let mut present = 0usize;
    for batch in keys.chunks(500) {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(batch);
        let n: usize = redis_cmd(ip, 6379, Some(password), &cmd)
            .await
            .unwrap_or_else(|e| panic!("EXISTS on the new master {ip}: {e}"));
        present += n;
    }
    keys.len() - present
}
