//! `kubectl vigil status NAME`: what the operator recorded about a replication, as a summary
//! (like `kubectl cnpg status`) or the status itself as JSON or YAML. Rendering is pure: the
//! text comes from the object and a clock.

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::wait::REQUESTS_ACCEPTED;
use super::{Error, Output};
use crate::api::requests::{FENCED_INSTANCES_ANNOTATION, Fencing};
use crate::api::{
    HibernationState, InstanceRole, LinkStatus, Phase, RedisReplication, RedisReplicationStatus,
};

/// The replication as `output` asks.
pub fn render(namespace: &str, rr: &RedisReplication, output: Output) -> Result<String, Error> {
    match output {
        Output::Text => Ok(text(namespace, rr, Timestamp::now())),
        Output::Json => serde_json::to_string_pretty(&rr.status)
            .map(|s| s + "\n")
            .map_err(|e| Error::encode("the status as JSON", e)),
        Output::Yaml => {
            serde_yaml::to_string(&rr.status).map_err(|e| Error::encode("the status as YAML", e))
        }
    }
}

/// The human summary at `now`.
pub fn text(namespace: &str, rr: &RedisReplication, now: Timestamp) -> String {
    let name = rr.name_any();
    let mut out = String::new();
    let mut field = |label: &str, value: &str| {
        let _ = writeln!(out, "{:<16}{value}", format!("{label}:"));
    };
    field("Replication", &format!("{namespace}/{name}"));
    let Some(status) = &rr.status else {
        field(
            "Phase",
            "no status yet: the operator has not reconciled it (is it running and watching this namespace?)",
        );
        return out;
    };
    field("Phase", &phase_name(status.phase));
    field("Master", &master_line(status));
    if let Some(target) = &status.target_master {
        field(
            "Changing to",
            &format!("{target} (epoch {}, in progress)", status.epoch),
        );
    }
    if let Some(since) = &status.master_silent_since {
        field(
            "Master silent",
            &format!(
                "since {} ({}): the operator cannot reach the master",
                since.0,
                age(now, since)
            ),
        );
    }
    if let Some(back) = &status.hand_back_to {
        field(
            "Hand back to",
            &format!("{back} (refilled from the master, then master again)"),
        );
    }
    if let Some(link) = &status.replica_of {
        field("Following", &following_line(link));
    }
    if let Some(line) = fenced_line(rr, status) {
        field("Fenced", &line);
    }
    if let Some(state) = status.hibernation {
        field("Hibernation", &hibernation_line(&name, status, state));
    }
    if let Some(c) = status
        .conditions
        .iter()
        .find(|c| c.type_ == REQUESTS_ACCEPTED && c.status == "False")
    {
        field(
            "Requests",
            &format!("not carried out ({}): {}", c.reason, c.message),
        );
    }
    let desired = rr.spec.instances;
    field(
        "Instances",
        &format!(
            "{desired} desired, {} ready, {} on the current spec",
            status.ready_instances, status.updated_instances
        ),
    );
    if status.observed_generation != rr.metadata.generation {
        field(
            "Generation",
            &format!(
                "{} observed of {} (the operator has not caught up with the spec yet)",
                opt(status.observed_generation),
                opt(rr.metadata.generation)
            ),
        );
    }

    out.push_str("\nConditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let mut rows = vec![row(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"])];
        for c in &status.conditions {
            rows.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(now, &c.last_transition_time),
                c.message.clone(),
            ]);
        }
        out.push_str(&table(&rows));
    }

    out.push_str("\nInstances:\n");
    if status.instances.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let mut rows = vec![row([
            "NAME", "ROLE", "READY", "ADDRESS", "OFFSET", "LAG", "LAG(S)", "LINK",
        ])];
        for i in &status.instances {
            let role = match (i.role, status.current_master.as_deref()) {
                (InstanceRole::Master, Some(m)) if m != i.name => "master (not recorded)".into(),
                (role, _) => role.as_str().to_string(),
            };
            rows.push(vec![
                i.name.clone(),
                role,
                if i.ready { "yes" } else { "no" }.into(),
                i.address.clone().unwrap_or_else(|| "-".into()),
                opt(i.replication_offset),
                i.lag_bytes
                    .map(|b| format!("{b} B"))
                    .unwrap_or_else(|| "-".into()),
                i.lag_seconds
                    .map(|s| format!("{s}s"))
                    .unwrap_or_else(|| "-".into()),
                match i.link_status {
                    Some(LinkStatus::Up) => "up".into(),
                    Some(LinkStatus::Down) => "down".into(),
                    None => "-".into(),
                },
            ]);
        }
        out.push_str(&table(&rows));
    }

    out.push_str("\nLast failover:\n");
    match &status.last_failover {
        None => out.push_str("  (none since bootstrap)\n"),
        Some(f) => {
            let rows = [
                ["Kind", &format!("{:?} (epoch {})", f.kind, f.epoch)],
                ["When", &format!("{} ({} ago)", f.time.0, age(now, &f.time))],
                ["From", &f.from],
                ["To", &f.to],
                ["Why", &f.reason],
                ["Took", &format!("{} ms", f.duration_milliseconds)],
            ];
            for [label, value] in rows {
                let _ = writeln!(out, "  {:<6}{value}", format!("{label}:"));
            }
        }
    }
    out
}

/// The external master a disaster-recovery set follows (`spec.replicaOf`).
fn following_line(link: &crate::api::ReplicaOfStatus) -> String {
    let source = link.source.as_deref().unwrap_or("(not located)");
    let mut line = match (link.link, link.lag_bytes) {
        (LinkStatus::Up, Some(lag)) => format!("{source}, link up, {lag} bytes behind"),
        (LinkStatus::Up, None) => format!("{source}, link up"),
        (LinkStatus::Down, _) => format!("{source}, link down"),
    };
    if let Some(why) = &link.message {
        line.push_str(&format!(": {why}"));
    }
    line + " (read-only; remove spec.replicaOf to promote)"
}

/// The fenced instances, and those asked for but not fenced yet.
fn fenced_line(rr: &RedisReplication, status: &RedisReplicationStatus) -> Option<String> {
    let asked = rr
        .annotations()
        .get(FENCED_INSTANCES_ANNOTATION)
        .and_then(|v| Fencing::parse(v).ok())
        .unwrap_or_default();
    let pending: Vec<&str> = status
        .instances
        .iter()
        .map(|i| i.name.as_str())
        .filter(|p| asked.fences(p) && !status.fenced_instances.iter().any(|f| f == p))
        .collect();
    let mut line = match status.fenced_instances.is_empty() {
        true => String::new(),
        false => format!(
            "{} (read-only, out of the Services, never promoted)",
            status.fenced_instances.join(", ")
        ),
    };
    if !pending.is_empty() {
        let sep = if line.is_empty() { "" } else { "; " };
        let _ = write!(
            line,
            "{sep}requested, not fenced yet: {}",
            pending.join(", ")
        );
    }
    (!line.is_empty()).then_some(line)
}

fn hibernation_line(
    name: &str,
    status: &RedisReplicationStatus,
    state: HibernationState,
) -> String {
    let master = status.current_master.as_deref().unwrap_or("none recorded");
    match state {
        HibernationState::Hibernating => {
            "Hibernating (the pods stop, replicas first; claims and Secrets stay)".into()
        }
        HibernationState::Hibernated => format!(
            "Hibernated (no pod runs; `kubectl vigil hibernate {name} off` wakes it with \
             master {master})"
        ),
        HibernationState::Waking => {
            format!("Waking (the pods are back; {master} takes the master role again)")
        }
    }
}

/// The phase as the status writes it, `-` before the first.
pub fn phase_name(phase: Option<Phase>) -> String {
    phase.map_or_else(|| "-".into(), |p| format!("{p:?}"))
}

fn master_line(status: &RedisReplicationStatus) -> String {
    match &status.current_master {
        None => "none recorded".into(),
        Some(m) => {
            let address = status.master_address.as_deref().unwrap_or("no address");
            format!("{m} ({address}), epoch {}", status.epoch)
        }
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// kubectl's short ages: 45s, 12m, 3h, 5d.
fn age(now: Timestamp, then: &Time) -> String {
    let seconds = (now.as_second() - then.0.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Left-aligned columns two spaces apart, indented by two; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn replication(status: serde_json::Value) -> RedisReplication {
        serde_json::from_value(json!({
            "apiVersion": "redis.vigil.dev/v1alpha1", "kind": "RedisReplication",
            "metadata": {"name": "cache", "namespace": "demo", "generation": 2},
            "spec": {"instances": 3},
            "status": status,
        }))
        .expect("fixture")
    }

    #[test]
    fn a_following_set_names_its_source_and_how_to_promote_it() {
        let rr = replication(json!({
            "phase": "Following", "currentMaster": "cache-0", "epoch": 1,
            "replicaOf": {"source": "10.9.0.5:6379", "link": "up", "lagBytes": 12},
        }));
        let out = text("demo", &rr, now());
        assert!(
            out.contains(
                "Following:      10.9.0.5:6379, link up, 12 bytes behind (read-only; remove \
                 spec.replicaOf to promote)"
            ),
            "{out}"
        );
    }

    fn now() -> Timestamp {
        "2025-01-02T03:10:05Z".parse().expect("time")
    }

    fn mid_failover() -> serde_json::Value {
        json!({
            "phase": "MasterUnavailable",
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "False", "reason": "MasterUnavailable",
                "message": "cache-0 is down", "lastTransitionTime": "2025-01-02T03:10:00Z"}],
            "currentMaster": "cache-0",
            "masterAddress": "10.244.0.5:6379",
            "epoch": 4,
            "masterSilentSince": "2025-01-02T03:09:58Z",
            "targetMaster": "cache-2",
            "readyInstances": 2,
            "updatedInstances": 3,
            "instances": [
                {"name": "cache-0", "role": "unknown", "ready": false},
                {"name": "cache-1", "role": "replica", "ready": true, "address": "10.244.0.6:6379",
                    "replicationOffset": 1200, "lagBytes": 34, "lagSeconds": 12,
                    "linkStatus": "down"},
                {"name": "cache-2", "role": "replica", "ready": true, "address": "10.244.0.7:6379",
                    "replicationOffset": 1234, "lagBytes": 0, "linkStatus": "down"},
            ],
            "lastFailover": {"time": "2025-01-02T03:04:05Z", "kind": "Switchover",
                "from": "cache-1", "to": "cache-0", "reason": "the user asked for cache-0",
                "durationMilliseconds": 120, "epoch": 3},
        })
    }

    #[test]
    fn a_set_mid_failover_reads_as_such() {
        let out = text("demo", &replication(mid_failover()), now());
        let expected = "\
Replication:    demo/cache
Phase:          MasterUnavailable
Master:         cache-0 (10.244.0.5:6379), epoch 4
Changing to:    cache-2 (epoch 4, in progress)
Master silent:  since 2025-01-02T03:09:58Z (7s): the operator cannot reach the master
Instances:      3 desired, 2 ready, 3 on the current spec

Conditions:
  TYPE   STATUS  REASON             AGE  MESSAGE
  Ready  False   MasterUnavailable  5s   cache-0 is down

Instances:
  NAME     ROLE     READY  ADDRESS          OFFSET  LAG   LAG(S)  LINK
  cache-0  unknown  no     -                -       -     -       -
  cache-1  replica  yes    10.244.0.6:6379  1200    34 B  12s     down
  cache-2  replica  yes    10.244.0.7:6379  1234    0 B   -       down

Last failover:
  Kind: Switchover (epoch 3)
  When: 2025-01-02T03:04:05Z (6m ago)
  From: cache-1
  To:   cache-0
  Why:  the user asked for cache-0
  Took: 120 ms
";
        assert_eq!(out, expected, "\n{out}");
    }

    #[test]
    fn a_new_set_without_status_says_so() {
        let mut rr = replication(json!({}));
        rr.status = None;
        let out = text("demo", &rr, now());
        assert!(out.contains("no status yet"), "{out}");
    }

    #[test]
    fn a_lagging_generation_and_no_failover_are_named() {
        let mut status = mid_failover();
        status["observedGeneration"] = json!(1);
        status.as_object_mut().map(|s| s.remove("lastFailover"));
        let out = text("demo", &replication(status), now());
        assert!(out.contains("Generation:     1 observed of 2"), "{out}");
        assert!(out.contains("(none since bootstrap)"), "{out}");
    }

    #[test]
    fn json_and_yaml_are_the_status_itself() {
        let rr = replication(mid_failover());
        let json = render("demo", &rr, Output::Json).expect("json");
        let back: RedisReplicationStatus = serde_json::from_str(&json).expect("parses");
        assert_eq!(Some(back), rr.status);
        let yaml = render("demo", &rr, Output::Yaml).expect("yaml");
        let back: RedisReplicationStatus = serde_yaml::from_str(&yaml).expect("parses");
        assert_eq!(Some(back), rr.status);
    }

    #[test]
    fn ages_are_kubectl_short() {
        let t = |s: &str| Time(s.parse().expect("time"));
        assert_eq!(age(now(), &t("2025-01-02T03:10:05Z")), "0s");
        assert_eq!(age(now(), &t("2025-01-02T03:00:05Z")), "10m");
        assert_eq!(age(now(), &t("2025-01-01T03:10:05Z")), "24h");
        assert_eq!(age(now(), &t("2024-12-01T03:10:05Z")), "32d");
        // A clock behind the apiserver's is not a negative age.
        assert_eq!(age(now(), &t("2025-01-02T03:11:05Z")), "0s");
    }

    #[test]
    fn fencing_hibernation_and_refused_requests_are_shown() {
        let mut status = mid_failover();
        status["fencedInstances"] = json!(["cache-1"]);
        status["hibernation"] = json!("Hibernating");
        status["conditions"] = json!([{"type": REQUESTS_ACCEPTED, "status": "False",
            "reason": "HibernationRefused", "message": "cache has no spec.storage",
            "lastTransitionTime": "2025-01-02T03:10:00Z"}]);
        let mut rr = replication(status);
        rr.metadata.annotations = Some(
            [(
                FENCED_INSTANCES_ANNOTATION.to_string(),
                "[\"cache-1\",\"cache-2\"]".to_string(),
            )]
            .into(),
        );
        let out = text("demo", &rr, now());
        for line in [
            "Fenced:         cache-1 (read-only, out of the Services, never promoted); \
             requested, not fenced yet: cache-2",
            "Hibernation:    Hibernating (the pods stop, replicas first; claims and Secrets stay)",
            "Requests:       not carried out (HibernationRefused): cache has no spec.storage",
        ] {
            assert!(out.lines().any(|l| l == line), "{line}\n{out}");
        }
        let mut status = mid_failover();
        status["hibernation"] = json!("Hibernated");
        let out = text("demo", &replication(status), now());
        assert!(
            out.contains("`kubectl vigil hibernate cache off` wakes it with master cache-0"),
            "{out}"
        );
        assert!(
            !out.contains("Fenced:") && !out.contains("Requests:"),
            "{out}"
        );
    }
}
