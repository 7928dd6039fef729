//! Prometheus metrics of the operator, exposed on GET /metrics in the OpenMetrics text format.
//!
//! Every series is labeled with the `RedisReplication` (`namespace`, `name`), and per-instance
//! series also with the `instance` (pod name), so one operator serving many replications gives
//! one series per instance, removed again by [`Metrics::forget_instance`].

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::api::InstanceRole;

/// The `Content-Type` of [`Metrics::encode`]'s output, for the /metrics response.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The roles of `vigil_instance_role`.
const ROLES: [InstanceRole; 4] = [
    InstanceRole::Master,
    InstanceRole::Replica,
    InstanceRole::Fenced,
    InstanceRole::Unknown,
];

/// Failover durations: from a fast promotion (~0.1 s) to one that waited out slow replicas (60 s).
const FAILOVER_BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 45.0, 60.0,
];

/// Probe round trips: sub-millisecond on a quiet network up to the 2 s a slow probe may take.
const PROBE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicationLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    namespace: String,
    name: String,
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    namespace: String,
    name: String,
    instance: String,
    role: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct Inner {
    registry: Registry,
    failovers: Family<ReplicationLabels, Counter>,
    failover_duration: HistogramFamily<ReplicationLabels>,
    instance_up: Family<InstanceLabels, Gauge>,
    instance_role: Family<RoleLabels, Gauge>,
    probe_duration: HistogramFamily<ReplicationLabels>,
}

/// The operator's metrics; clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let failovers = Family::<ReplicationLabels, Counter>::default();
        let failover_duration: HistogramFamily<ReplicationLabels> =
            Family::new_with_constructor(|| Histogram::new(FAILOVER_BUCKETS));
        let instance_up = Family::<InstanceLabels, Gauge>::default();
        let instance_role = Family::<RoleLabels, Gauge>::default();
        let probe_duration: HistogramFamily<ReplicationLabels> =
            Family::new_with_constructor(|| Histogram::new(PROBE_BUCKETS));

        // The registry appends `_total` to counters and the unit suffix to the name given, so the
        // exposed names are the ones in the docs.
        let mut registry = Registry::default();
        registry.register(
            "vigil_failovers",
            "Failovers completed (a new master promoted and the replicas rewired)",
            failovers.clone(),
        );
        registry.register_with_unit(
            "vigil_failover_duration",
            "Time from detecting the master failure to all replicas rewired",
            Unit::Seconds,
            failover_duration.clone(),
        );
        registry.register(
            "vigil_instance_up",
            "Whether the instance answered its last probe (1) or not (0)",
            instance_up.clone(),
        );
        registry.register(
            "vigil_instance_role",
            "Role the instance reports: 1 for its current role, 0 for the others",
            instance_role.clone(),
        );
        registry.register_with_unit(
            "vigil_probe_duration",
            "Duration of one probe of an instance",
            Unit::Seconds,
            probe_duration.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                failovers,
                failover_duration,
                instance_up,
                instance_role,
                probe_duration,
            }),
        }
    }

    /// A failover of namespace/name completed, taking `duration` (crash detection to all
    /// rewired, as the caller measures).
    pub fn failover_completed(&self, namespace: &str, name: &str, duration: Duration) {
        let labels = replication(namespace, name);
        self.inner.failovers.get_or_create(&labels).inc();
        self.inner
            .failover_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// One probe of an instance: how long it took and whether it answered.
    pub fn probe(&self, namespace: &str, name: &str, instance: &str, duration: Duration, up: bool) {
        self.inner
            .probe_duration
            .get_or_create(&replication(namespace, name))
            .observe(duration.as_secs_f64());
        self.inner
            .instance_up
            .get_or_create(&instance_labels(namespace, name, instance))
            .set(i64::from(up));
    }

    /// The role an instance reports: "master", "replica", "fenced" or "unknown"; one-hot gauge
    /// per role.
    pub fn instance_role(&self, namespace: &str, name: &str, instance: &str, role: InstanceRole) {
        // All four series always exist, so a query for `role="master" == 1` also sees the 0s.
        for r in ROLES {
            self.inner
                .instance_role
                .get_or_create(&role_labels(namespace, name, instance, r))
                .set(i64::from(r == role));
        }
    }

    /// The instance is gone (scale-down, deletion of the replication): remove its series.
    pub fn forget_instance(&self, namespace: &str, name: &str, instance: &str) {
        self.inner
            .instance_up
            .remove(&instance_labels(namespace, name, instance));
        for r in ROLES {
            self.inner
                .instance_role
                .remove(&role_labels(namespace, name, instance, r));
        }
    }

    /// Text exposition for GET /metrics (OpenMetrics text format).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would come from a metric's encoder.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::error!(error = %e, "encoding metrics failed; the exposition is incomplete");
        }
        out
    }
}

fn replication(namespace: &str, name: &str) -> ReplicationLabels {
    ReplicationLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn instance_labels(namespace: &str, name: &str, instance: &str) -> InstanceLabels {
    InstanceLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        instance: instance.to_owned(),
    }
}

fn role_labels(namespace: &str, name: &str, instance: &str, role: InstanceRole) -> RoleLabels {
    RoleLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        instance: instance.to_owned(),
        role: role.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn is_shareable() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Metrics>();
    }

    #[test]
    fn exposition_has_descriptors_and_eof() {
        let m = Metrics::new();
        // Families without series are left out of the exposition.
        assert_eq!(m.encode(), "# EOF\n");
        m.failover_completed("ns", "cache", Duration::from_secs(1));
        m.probe("ns", "cache", "cache-0", Duration::from_millis(1), true);
        m.instance_role("ns", "cache", "cache-0", InstanceRole::Master);
        let text = m.encode();
        let l = lines(&text);
        for descriptor in [
            "# TYPE vigil_failovers counter",
            "# TYPE vigil_failover_duration_seconds histogram",
            "# UNIT vigil_failover_duration_seconds seconds",
            "# TYPE vigil_instance_up gauge",
            "# TYPE vigil_instance_role gauge",
            "# TYPE vigil_probe_duration_seconds histogram",
            "# UNIT vigil_probe_duration_seconds seconds",
        ] {
            assert!(l.contains(&descriptor), "{descriptor} missing in {text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn failover_series() {
        let m = Metrics::new();
        m.failover_completed("ns", "cache", Duration::from_millis(2500));
        m.failover_completed("ns", "cache", Duration::from_secs(90));
        let text = m.encode();
        let l = lines(&text);
        assert!(
            l.contains(&r#"vigil_failovers_total{namespace="ns",name="cache"} 2"#),
            "{text}"
        );
        assert!(
            l.contains(&r#"vigil_failover_duration_seconds_count{namespace="ns",name="cache"} 2"#)
        );
        assert!(
            l.contains(&r#"vigil_failover_duration_seconds_sum{namespace="ns",name="cache"} 92.5"#)
        );
        assert!(l.contains(
            &r#"vigil_failover_duration_seconds_bucket{le="0.1",namespace="ns",name="cache"} 0"#
        ));
        assert!(l.contains(
            &r#"vigil_failover_duration_seconds_bucket{le="3.0",namespace="ns",name="cache"} 1"#
        ));
        assert!(l.contains(
            &r#"vigil_failover_duration_seconds_bucket{le="60.0",namespace="ns",name="cache"} 1"#
        ));
        assert!(l.contains(
            &r#"vigil_failover_duration_seconds_bucket{le="+Inf",namespace="ns",name="cache"} 2"#
        ));
    }

    #[test]
    fn probe_series() {
        let m = Metrics::new();
        m.probe("ns", "cache", "cache-0", Duration::from_micros(300), true);
        m.probe("ns", "cache", "cache-1", Duration::from_secs(3), false);
        let text = m.encode();
        let l = lines(&text);
        assert!(
            l.contains(&r#"vigil_instance_up{namespace="ns",name="cache",instance="cache-0"} 1"#),
            "{text}"
        );
        assert!(
            l.contains(&r#"vigil_instance_up{namespace="ns",name="cache",instance="cache-1"} 0"#)
        );
        assert!(
            l.contains(&r#"vigil_probe_duration_seconds_count{namespace="ns",name="cache"} 2"#)
        );
        assert!(l.contains(
            &r#"vigil_probe_duration_seconds_bucket{le="0.0005",namespace="ns",name="cache"} 1"#
        ));
        assert!(l.contains(
            &r#"vigil_probe_duration_seconds_bucket{le="2.0",namespace="ns",name="cache"} 1"#
        ));
    }

    #[test]
    fn role_is_one_hot() {
        let m = Metrics::new();
        m.instance_role("ns", "cache", "cache-0", InstanceRole::Replica);
        m.instance_role("ns", "cache", "cache-0", InstanceRole::Master);
        let text = m.encode();
        let l = lines(&text);
        let series = |role: &str, v: u8| {
            format!(
                r#"vigil_instance_role{{namespace="ns",name="cache",instance="cache-0",role="{role}"}} {v}"#
            )
        };
        assert!(l.contains(&series("master", 1).as_str()), "{text}");
        assert!(l.contains(&series("replica", 0).as_str()));
        assert!(l.contains(&series("fenced", 0).as_str()));
        assert!(l.contains(&series("unknown", 0).as_str()));
        let ones = l
            .iter()
            .filter(|s| s.starts_with("vigil_instance_role{") && s.ends_with(" 1"))
            .count();
        assert_eq!(ones, 1, "{text}");
    }

    #[test]
    fn forget_instance_removes_its_series_only() {
        let m = Metrics::new();
        for pod in ["cache-0", "cache-1"] {
            m.probe("ns", "cache", pod, Duration::from_millis(1), true);
            m.instance_role("ns", "cache", pod, InstanceRole::Replica);
        }
        m.forget_instance("ns", "cache", "cache-1");
        let text = m.encode();
        assert!(!text.contains(r#"instance="cache-1""#), "{text}");
        assert!(
            text.contains(r#"vigil_instance_up{namespace="ns",name="cache",instance="cache-0"} 1"#)
        );
        assert_eq!(text.matches(r#"instance="cache-0",role="#).count(), 4);
        // The per-replication probe histogram keeps both probes.
        assert!(
            text.contains(r#"vigil_probe_duration_seconds_count{namespace="ns",name="cache"} 2"#)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.probe("ns", "cache", "odd\"pod\n", Duration::from_millis(1), true);
        let text = m.encode();
        assert!(text.contains(r#"instance="odd\"pod\n""#), "{text}");
    }
}
