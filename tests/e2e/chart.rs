//! The chart's optional objects for the operator (metrics Service, ServiceMonitor,
//! PrometheusRule, NetworkPolicy): none by default; when on, wired to the operator pods' labels
//! and ports, alerting on series the operator really exports, and accepted by the apiserver.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;
use vigil::metrics::Metrics;

use crate::support::{TestNs, wait_for};

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/vigil");
/// Stand-ins for the Prometheus Operator's CRDs, which the local control plane lacks.
const PROMETHEUS_CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/e2e/fixtures/prometheus-operator-crds.yaml"
);
const MONITORING_PEER: &str =
    r#"[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#;

type Labels = BTreeMap<String, String>;

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_renders_optional_operator_objects_the_apiserver_accepts() {
    let t = TestNs::new("chartopt").await;

    let defaults = render(&t, &[]).1;
    for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"] {
        assert!(
            objects(&defaults, kind).is_empty(),
            "{kind} in the default render"
        );
    }
    assert!(
        defaults
            .iter()
            .all(|d| d["metadata"]["name"] != "vigil-metrics"),
        "metrics Service in the default render"
    );

    let metrics_from = format!("networkPolicy.metrics.from={MONITORING_PEER}");
    let all_on = [
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prometheus",
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.labels.release=prometheus",
        "--set",
        "networkPolicy.enabled=true",
        "--set-json",
        &metrics_from,
    ];
    let lint = helm(&t, &[&["lint", "--strict", CHART][..], &all_on].concat());
    assert!(
        lint.status.success(),
        "helm lint with every option on: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let (manifest, docs) = render(&t, &all_on);

    let deployment = object(&docs, "Deployment", "vigil");
    let pod = &deployment["spec"]["template"];
    let pod_labels = labels(&pod["metadata"]["labels"]);
    let container = &pod["spec"]["containers"][0];
    let container_ports: BTreeMap<&str, u64> = sequence(&container["ports"])
        .iter()
        .map(|p| {
            let number = p["containerPort"].as_u64().expect("numeric containerPort");
            (text(&p["name"]), number)
        })
        .collect();
    // A Service or NetworkPolicy port is a number or the name of a container port.
    let port_number = |port: &Value| {
        port.as_u64().unwrap_or_else(|| {
            *container_ports
                .get(text(port))
                .unwrap_or_else(|| panic!("no container port named {port:?}"))
        })
    };

    let service = object(&docs, "Service", "vigil-metrics");
    assert_eq!(service["metadata"]["namespace"], t.name.as_str());
    assert!(
        is_subset(&labels(&service["spec"]["selector"]), &pod_labels),
        "the metrics Service selects the operator pods: {service:?}"
    );
    let service_ports = sequence(&service["spec"]["ports"]);
    assert_eq!(service_ports.len(), 1, "{service:?}");
    assert_eq!(service_ports[0]["name"], "metrics");
    assert_eq!(service_ports[0]["port"].as_u64(), Some(8081));
    let metrics_port = port_number(&service_ports[0]["targetPort"]);
    let health_addr = format!("--health-addr=0.0.0.0:{metrics_port}");
    assert!(
        sequence(&container["args"])
            .iter()
            .any(|a| *a == health_addr.as_str()),
        "the Service targets the port the operator serves /metrics on ({health_addr})"
    );

    let monitor = object(&docs, "ServiceMonitor", "vigil");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], t.name.as_str());
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let selector = labels(&monitor["spec"]["selector"]["matchLabels"]);
    let selected: Vec<&str> = objects(&docs, "Service")
        .into_iter()
        .filter(|s| is_subset(&selector, &labels(&s["metadata"]["labels"])))
        .map(|s| text(&s["metadata"]["name"]))
        .collect();
    assert_eq!(
        selected,
        ["vigil-metrics"],
        "the ServiceMonitor selects the metrics Service alone, not the Sentinel one"
    );
    assert_eq!(
        strings(&monitor["spec"]["namespaceSelector"]["matchNames"]),
        [t.name.as_str()]
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "30s");
    assert_eq!(endpoint["scrapeTimeout"], "10s");
    // Without it the RedisReplication's `namespace` and `instance` labels become exported_*.
    assert_eq!(endpoint["honorLabels"], true);

    let policy = object(&docs, "NetworkPolicy", "vigil");
    assert!(
        is_subset(
            &labels(&policy["spec"]["podSelector"]["matchLabels"]),
            &pod_labels
        ),
        "the NetworkPolicy isolates the operator pods: {policy:?}"
    );
    assert_eq!(
        strings(&policy["spec"]["policyTypes"]),
        ["Ingress"],
        "egress stays open (apiserver, Redis pods)"
    );
    let open: BTreeMap<u64, &Value> = sequence(&policy["spec"]["ingress"])
        .iter()
        .flat_map(|rule| {
            sequence(&rule["ports"])
                .iter()
                .map(|p| (port_number(&p["port"]), &rule["from"]))
        })
        .collect();
    assert_eq!(
        open.keys().copied().collect::<Vec<_>>(),
        [8081, 26379],
        "only the metrics and Sentinel ports are open: {policy:?}"
    );
    assert!(
        open[&26379].is_null(),
        "Sentinel clients may come from anywhere by default"
    );
    let peer: Value = serde_yaml::from_str(MONITORING_PEER).expect("peer YAML");
    assert_eq!(*open[&8081], peer, "metrics only from the configured peers");

    let rule = object(&docs, "PrometheusRule", "vigil");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let alerts = alerts(rule);
    assert_eq!(
        alerts.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "VigilFailover",
            "VigilMultipleMasters",
            "VigilNoMaster",
            "VigilOperatorAbsent",
            "VigilOperatorDown",
            "VigilRedisInstanceDown",
        ])
    );
    // The ServiceMonitor's targets get the Service's name as `job` and its namespace.
    let up = format!(r#"up{{job="vigil-metrics", namespace="{}"}}"#, t.name);
    for name in ["VigilOperatorDown", "VigilOperatorAbsent"] {
        assert!(alerts[name].contains(&up), "{name} watches {up}");
    }
    assert_queries_exported_series(&alerts);

    apply_prometheus_crds(&t);
    let path = t
        .env
        .artifacts
        .join(format!("{}-chart-options.yaml", t.name));
    std::fs::write(&path, &manifest).expect("write manifest");
    // Right after the CRDs are established, kubectl's discovery may not know them yet.
    let out = wait_for(
        "a server-side dry run of the chart with every option on",
        Duration::from_secs(30),
        || {
            let (passed, out) = t.server_dry_run(&path);
            async move { if passed { Ok(out) } else { Err(out) } }
        },
    )
    .await;
    for applied in [
        "service/vigil-metrics",
        "servicemonitor.monitoring.coreos.com/vigil",
        "prometheusrule.monitoring.coreos.com/vigil",
        "networkpolicy.networking.k8s.io/vigil",
    ] {
        assert!(out.contains(applied), "{applied} in dry run output: {out}");
    }
}

/// The other values: the Service alone, namespace overrides, replaced and added rules, and
/// the strict schema.
#[tokio::test(flavor = "multi_thread")]
async fn the_chart_options_for_the_operator_objects_take_effect() {
    let t = TestNs::new("chartval").await;

    let docs = render(&t, &["--set", "metrics.service.enabled=true"]).1;
    object(&docs, "Service", "vigil-metrics");
    assert!(objects(&docs, "ServiceMonitor").is_empty());

    let rules =
        r#"metrics.prometheusRule.rules=[{"alert":"Mine","expr":"vigil_instance_up == 0"}]"#;
    let additional = r#"metrics.prometheusRule.additionalRules=[{"record":"vigil:up:min","expr":"min(vigil_instance_up)"}]"#;
    let docs = render(
        &t,
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.namespace=monitoring",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.prometheusRule.namespace=monitoring",
            "--set-json",
            rules,
            "--set-json",
            additional,
        ],
    )
    .1;
    let monitor = object(&docs, "ServiceMonitor", "vigil");
    assert_eq!(monitor["metadata"]["namespace"], "monitoring");
    assert_eq!(
        strings(&monitor["spec"]["namespaceSelector"]["matchNames"]),
        [t.name.as_str()],
        "a ServiceMonitor elsewhere still finds the Service in the release namespace"
    );
    let rule = object(&docs, "PrometheusRule", "vigil");
    assert_eq!(rule["metadata"]["namespace"], "monitoring");
    let names: Vec<&str> = rule_objects(rule)
        .map(|r| {
            text(if r["alert"].is_null() {
                &r["record"]
            } else {
                &r["alert"]
            })
        })
        .collect();
    assert_eq!(
        names,
        ["Mine", "vigil:up:min"],
        "`rules` replaces the built-ins"
    );

    for bad in [
        "metrics.serviceMonitor.interval=soon",
        "metrics.serviceMonitor.intervall=30s",
        "networkPolicy.sentinel.form=x",
    ] {
        let out = helm(&t, &["template", "vigil", CHART, "--set", bad]);
        assert!(!out.status.success(), "the schema rejects {bad}");
    }
}

/// The operator's pod, as the chart's Deployment would create it, passes the apiserver's Pod
/// Security admission in a namespace that enforces `restricted` (every test namespace does);
/// a dry run, so nothing runs.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_pod_meets_the_restricted_pod_security_standard() {
    let t = TestNs::new("chartpss").await;
    let (_, docs) = render(&t, &[]);
    let template = &object(&docs, "Deployment", "vigil")["spec"]["template"];
    let mut pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vigil-operator-pss"},
        "spec": serde_json::to_value(&template["spec"]).expect("pod spec as JSON"),
    }))
    .expect("the template is a pod spec");
    // The chart's ServiceAccount lives in the release's namespace, not here; Pod Security does
    // not look at it.
    if let Some(spec) = pod.spec.as_mut() {
        spec.service_account_name = None;
    }
    let params = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    let created = t.pods().create(&params, &pod).await;
    assert!(
        created.is_ok(),
        "restricted Pod Security admission rejected the operator's pod: {created:?}"
    );
}

pub fn helm(t: &TestNs, args: &[&str]) -> Output {
    Command::new(&t.env.helm)
        .args(args)
        .output()
        .expect("run helm")
}

/// `helm template` of release `vigil` in the test namespace: the text and its documents.
pub fn render(t: &TestNs, extra: &[&str]) -> (String, Vec<Value>) {
    let out = helm(
        t,
        &[
            &["template", "vigil", CHART, "--namespace", &t.name][..],
            extra,
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "helm template {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = String::from_utf8(out.stdout).expect("utf-8 manifest");
    let docs = serde_yaml::Deserializer::from_str(&manifest)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|doc| !doc.is_null())
        .collect();
    (manifest, docs)
}

fn objects<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

pub fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not rendered"))
}

pub fn text(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("a string expected: {v:?}"))
}

pub fn sequence(v: &Value) -> &[Value] {
    v.as_sequence()
        .unwrap_or_else(|| panic!("a list expected: {v:?}"))
}

pub fn strings(v: &Value) -> Vec<&str> {
    sequence(v).iter().map(text).collect()
}

fn labels(v: &Value) -> Labels {
    v.as_mapping()
        .unwrap_or_else(|| panic!("a map expected: {v:?}"))
        .iter()
        .map(|(k, v)| (text(k).to_owned(), text(v).to_owned()))
        .collect()
}

fn is_subset(part: &Labels, whole: &Labels) -> bool {
    !part.is_empty() && part.iter().all(|(k, v)| whole.get(k) == Some(v))
}

fn rule_objects(rule: &Value) -> impl Iterator<Item = &Value> {
    sequence(&rule["spec"]["groups"])
        .iter()
        .flat_map(|g| sequence(&g["rules"]))
}

/// Alert name -> expression.
fn alerts(rule: &Value) -> BTreeMap<&str, &str> {
    rule_objects(rule)
        .map(|r| (text(&r["alert"]), text(&r["expr"])))
        .collect()
}

/// The samples the operator exposes once each of its series exists: name -> label sets.
fn exported_series() -> BTreeMap<String, Vec<Labels>> {
    let metrics = Metrics::new();
    metrics.failover_completed("ns", "cache", Duration::from_secs(2));
    metrics.probe("ns", "cache", "cache-0", Duration::from_millis(1), true);
    metrics.instance_role("ns", "cache", "cache-0", vigil::api::InstanceRole::Master);
    let mut series: BTreeMap<String, Vec<Labels>> = BTreeMap::new();
    for line in metrics.encode().lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = line
            .split_once(['{', ' '])
            .unwrap_or_else(|| panic!("sample line {line:?}"));
        let label_set = rest
            .split_once('}')
            .map(|(body, _)| body)
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        series.entry(name.to_owned()).or_default().push(label_set);
    }
    series
}

/// `(name, [(label, value)])` of every `vigil_*` selector in a PromQL expression (equality
/// matchers only, which is all the chart's rules use).
fn vigil_selectors(expr: &str) -> Vec<(&str, Vec<(&str, &str)>)> {
    let mut selectors = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("vigil_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let (name, after) = tail.split_at(end);
        let matchers = after
            .strip_prefix('{')
            .map(|body| {
                let body = &body[..body.find('}').expect("selector closes")];
                body.split(',')
                    .filter(|m| !m.trim().is_empty())
                    .map(|m| {
                        let (k, v) = m.split_once('=').expect("label=\"value\"");
                        (k.trim(), v.trim().trim_matches('"'))
                    })
                    .collect()
            })
            .unwrap_or_default();
        selectors.push((name, matchers));
        rest = after;
    }
    selectors
}

/// Every built-in alert queries series the operator exports (names, matchers and the labels it
/// groups by), or Prometheus's own `up`, so a renamed metric or label breaks this test rather
/// than silently muting an alert.
fn assert_queries_exported_series(alerts: &BTreeMap<&str, &str>) {
    let exported = exported_series();
    for (alert, expr) in alerts {
        let selectors = vigil_selectors(expr);
        if selectors.is_empty() {
            assert!(expr.contains("up{"), "{alert} queries no series: {expr}");
            continue;
        }
        let mut label_names = BTreeSet::new();
        for (name, matchers) in selectors {
            let samples = exported
                .get(name)
                .unwrap_or_else(|| panic!("{alert}: the operator exports no {name}: {expr}"));
            for (k, v) in matchers {
                assert!(
                    samples
                        .iter()
                        .any(|s| s.get(k).map(String::as_str) == Some(v)),
                    "{alert}: no {name} sample has {k}={v:?}"
                );
            }
            label_names.extend(samples.iter().flat_map(|s| s.keys().cloned()));
        }
        for (i, by) in expr.match_indices("by (") {
            let body = &expr[i + by.len()..];
            for label in body[..body.find(')').expect("grouping closes")].split(',') {
                assert!(
                    label_names.contains(label.trim()),
                    "{alert} groups by {label:?}, which its series lack: {expr}"
                );
            }
        }
    }
}

/// Installs the Prometheus Operator CRD stand-ins (idempotent; other tests may share them, so
/// they stay) and waits until they are served.
fn apply_prometheus_crds(t: &TestNs) {
    for args in [
        &["apply", "--server-side", "-f", PROMETHEUS_CRDS][..],
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ],
    ] {
        let out = t.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
