//! Scheduling and shape: the spec's scheduling fields, pod labels and annotations, the client
//! Services' type and annotations and the PodDisruptionBudget reach the objects the operator
//! builds, and the apiserver rejects what the schema forbids.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::support::{TestNs, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn scheduling_and_shape_fields_reach_pods_services_and_budget() {
    let mut t = TestNs::new("shape").await;
    // Cluster-scoped, so named after the (unique) namespace.
    let priority_class = format!("{}-redis", t.name);
    let classes: Api<PriorityClass> = Api::all(t.admin.clone());
    let class: PriorityClass = serde_json::from_value(json!({
        "metadata": {"name": priority_class},
        "value": 1000,
        "description": "vigil e2e: pods of a RedisReplication",
    }))
    .expect("priority class");
    classes
        .create(&PostParams::default(), &class)
        .await
        .expect("create PriorityClass");

    t.start_operator();
    // Every scheduling field is satisfiable on the single local node, which has no taints and
    // the usual kubelet labels (preferred anti-affinity and a ScheduleAnyway spread).
    let instance = json!({"matchLabels": {"app.kubernetes.io/instance": "cache"}});
    t.create_replication(
        "cache",
        json!({
            "instances": 2,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "redis",
                "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100,
                "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                    "labelSelector": instance},
            }]}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": instance}],
            "priorityClassName": priority_class,
            "podLabels": {"team": "checkout"},
            "podAnnotations": {"example.com/owner": "checkout"},
            "service": {"type": "NodePort", "annotations": {"example.com/lb": "internal"}},
            "podDisruptionBudget": {"maxUnavailable": 1},
        }),
    )
    .await;
    t.wait_ready("cache", 2, Duration::from_secs(120)).await;

    let pods = t
        .pods()
        .list(&ListParams::default().labels("redis.vigil.dev/replication=cache"))
        .await
        .expect("list pods");
    assert_eq!(pods.items.len(), 2);
    for pod in &pods.items {
        let name = pod.name_any();
        let label = |key: &str| pod.labels().get(key).map(String::as_str);
        assert_eq!(label("team"), Some("checkout"), "{name}");
        assert_eq!(
            label("app.kubernetes.io/managed-by"),
            Some("vigil"),
            "{name}"
        );
        assert_eq!(
            pod.annotations()
                .get("example.com/owner")
                .map(String::as_str),
            Some("checkout"),
            "{name}"
        );
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(
            spec.node_selector
                .as_ref()
                .and_then(|s| s.get("kubernetes.io/os"))
                .map(String::as_str),
            Some("linux"),
            "{name}"
        );
        assert!(
            spec.tolerations
                .iter()
                .flatten()
                .any(|t| t.key.as_deref() == Some("dedicated")),
            "{name}: {:?}",
            spec.tolerations
        );
        let preferred = spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .unwrap_or_else(|| panic!("{name}: no preferred pod anti-affinity"));
        assert_eq!(
            preferred[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        let spread = spec
            .topology_spread_constraints
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no topology spread constraints"));
        assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some(priority_class.as_str())
        );
        // Set by the apiserver's Priority admission from the class: the class really applied.
        assert_eq!(spec.priority, Some(1000), "{name}");
    }

    // Pod labels and annotations follow the spec on the running pods, removals included.
    let uids: BTreeMap<String, Option<String>> = t
        .pods()
        .list(&Default::default())
        .await
        .expect("pods")
        .into_iter()
        .map(|p| (p.name_any(), p.uid()))
        .collect();
    t.patch_spec(
        "cache",
        json!({"podLabels": {"team": "payments"}, "podAnnotations": null}),
    )
    .await;
    wait_for(
        "pod labels and annotations to follow the spec",
        Duration::from_secs(60),
        || async {
            let pods = t
                .pods()
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let stale: Vec<String> = pods
                .iter()
                .filter(|p| {
                    p.labels().get("team").map(String::as_str) != Some("payments")
                        || p.annotations().contains_key("example.com/owner")
                        || p.labels().get("redis.vigil.dev/replication").is_none()
                })
                .map(|p| p.name_any())
                .collect();
            if stale.is_empty() {
                Ok(())
            } else {
                Err(format!("{stale:?}"))
            }
        },
    )
    .await;
    for pod in t.pods().list(&Default::default()).await.expect("pods") {
        assert_eq!(uids.get(&pod.name_any()), Some(&pod.uid()), "not replaced");
    }

    let services: Api<Service> = Api::namespaced(t.admin.clone(), &t.name);
    for name in ["cache-master", "cache-replicas"] {
        let svc = services.get(name).await.expect("client Service");
        assert_eq!(
            svc.annotations().get("example.com/lb").map(String::as_str),
            Some("internal"),
            "{name}"
        );
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("NodePort"), "{name}");
        let port = &spec.ports.expect("ports")[0];
        assert!(port.node_port.is_some(), "{name}: a node port is allocated");
    }
    let headless = services.get("cache-headless").await.expect("headless");
    assert!(!headless.annotations().contains_key("example.com/lb"));
    let spec = headless.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));

    let budgets: Api<PodDisruptionBudget> = Api::namespaced(t.admin.clone(), &t.name);
    let pdb = budgets.get("cache").await.expect("PodDisruptionBudget");
    assert!(
        pdb.owner_references()
            .iter()
            .any(|o| o.kind == "RedisReplication" && o.controller == Some(true)),
        "owned by the replication: {:?}",
        pdb.owner_references()
    );
    let spec = pdb.spec.expect("spec");
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(
        spec.selector.and_then(|s| s.match_labels),
        Some(BTreeMap::from([(
            "redis.vigil.dev/replication".to_string(),
            "cache".to_string()
        )]))
    );
    // The disruption controller resolves maxUnavailable against the replication's scale
    // subresource: both instances expected, one may go. It learns of the CRD (installed after
    // it started) at its 30-s discovery refresh and retries a failed budget only on a pod
    // event, so the test touches a pod while it waits, as any label change would.
    let pods = t.pods();
    let mut nudges = 0u32;
    wait_for(
        "the budget to allow one disruption of two pods",
        Duration::from_secs(90),
        || {
            nudges += 1;
            let (budgets, pods) = (&budgets, &pods);
            async move {
                let status = budgets
                    .get("cache")
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .ok_or("no status")?;
                if status.expected_pods == 2 && status.disruptions_allowed == 1 {
                    return Ok(());
                }
                if nudges.is_multiple_of(20) {
                    let touch = json!({"metadata": {"annotations": {"e2e.vigil.dev/nudge": nudges.to_string()}}});
                    pods.patch("cache-0", &PatchParams::default(), &Patch::Merge(&touch))
                        .await
                        .map_err(|e| format!("touching cache-0: {e}"))?;
                }
                Err(format!("{status:?}"))
            }
        },
    )
    .await;

    // Enabled only now: where policies are enforced (kind), the test's own redis-cli and the
    // operator run on the host, which the policy does not admit.
    t.patch_spec(
        "cache",
        json!({"networkPolicy": {"enabled": true,
            "from": [{"podSelector": {"matchLabels": {"app": "shop"}}}]}}),
    )
    .await;
    let policies: Api<NetworkPolicy> = Api::namespaced(t.admin.clone(), &t.name);
    let policy = wait_for("the NetworkPolicy", Duration::from_secs(60), || async {
        policies
            .get_opt("cache")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let rule = serde_json::to_value(&policy.spec.expect("spec").ingress.expect("ingress")[0])
        .expect("json");
    assert_eq!(
        rule,
        json!({
            "from": [
                {"podSelector": {"matchLabels": {"redis.vigil.dev/replication": "cache"}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vigil-system"}}},
                {"podSelector": {"matchLabels": {"app": "shop"}}},
            ],
            "ports": [{"port": 6379, "protocol": "TCP"}],
        }),
        "the set, the operator's namespace and the named clients reach Redis, nobody else"
    );

    t.patch_spec(
        "cache",
        json!({"podDisruptionBudget": {"enabled": false}, "networkPolicy": {"enabled": false}}),
    )
    .await;
    wait_for(
        "the disabled budget and policy to be deleted",
        Duration::from_secs(60),
        || async {
            let budget = budgets.get_opt("cache").await.map_err(|e| e.to_string())?;
            let policy = policies.get_opt("cache").await.map_err(|e| e.to_string())?;
            match (budget, policy) {
                (None, None) => Ok(()),
                (b, p) => Err(format!("budget {}, policy {}", b.is_some(), p.is_some())),
            }
        },
    )
    .await;

    classes
        .delete(&priority_class, &DeleteParams::default())
        .await
        .expect("delete PriorityClass");
}

/// The apiserver rejects, naming the field or key, what the shape fields' schema forbids.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_shape_specs_are_rejected_naming_the_field() {
    let t = TestNs::new("shape-invalid").await;
    let cases = [
        (
            json!({"instances": 1, "service": {"type": "Bogus"}}),
            vec!["spec.service.type", "Bogus"],
        ),
        (
            json!({"instances": 1, "podLabels": {"redis.vigil.dev/role": "master"}}),
            vec![
                "spec.podLabels",
                "pod label 'redis.vigil.dev/role' is managed by vigil",
            ],
        ),
        (
            json!({"instances": 1, "podLabels": {"app.kubernetes.io/managed-by": "helm"}}),
            vec!["pod label 'app.kubernetes.io/managed-by' is managed by vigil"],
        ),
        (
            json!({"instances": 1,
                "podAnnotations": {"redis.vigil.dev/replica-priority": "0"}}),
            vec![
                "spec.podAnnotations",
                "pod annotation 'redis.vigil.dev/replica-priority' is managed by vigil",
            ],
        ),
        (
            json!({"instances": 1, "podDisruptionBudget": {"maxUnavailable": -1}}),
            vec![
                "spec.podDisruptionBudget.maxUnavailable",
                "must be a number >= 0",
            ],
        ),
        (
            json!({"instances": 1, "podDisruptionBudget": {"maxUnavailable": "150%"}}),
            vec!["spec.podDisruptionBudget.maxUnavailable"],
        ),
        (
            json!({"instances": 1, "exporter": {"enabled": true, "image": ""}}),
            vec!["spec.exporter.image"],
        ),
    ];
    for (spec, expected) in cases {
        t.assert_rejected(&spec, &expected).await;
    }
    // The same fields with allowed values pass, so each case above fails for its own reason.
    let ok = json!({"instances": 1, "service": {"type": "LoadBalancer"},
        "podLabels": {"team": "checkout"}, "podAnnotations": {"example.com/x": "y"},
        "podDisruptionBudget": {"maxUnavailable": "50%"},
        "exporter": {"enabled": true, "image": "registry.local/redis_exporter:1"}});
    t.create_raw("good", &ok)
        .await
        .unwrap_or_else(|e| panic!("spec {ok} is accepted: {e}"));
}

/// Owned objects are applied once and then only when someone else changes them (no per-tick
/// re-apply): an edited Service and a deleted ConfigMap are put back at once, well before the
/// 5-minute re-apply that repairs what no watch sees.
#[tokio::test(flavor = "multi_thread")]
async fn owned_objects_someone_else_changes_are_put_back() {
    let mut t = TestNs::new("drift").await;
    t.start_operator();
    t.create_replication("cache", json!({"instances": 1})).await;
    t.wait_ready("cache", 1, Duration::from_secs(120)).await;
    let services: Api<Service> = Api::namespaced(t.admin.clone(), &t.name);
    let selector = |svc: &Service| svc.spec.as_ref().and_then(|s| s.selector.clone());
    let original = selector(&services.get("cache-master").await.expect("master Service"));
    assert!(original.is_some(), "the master Service selects the master");
    // As `kubectl edit` would: every key the operator set now selects nothing.
    let elsewhere: BTreeMap<String, String> = original
        .iter()
        .flatten()
        .map(|(k, _)| (k.clone(), "elsewhere".to_string()))
        .collect();
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    services
        .patch(
            "cache-master",
            &edit,
            &Patch::Merge(json!({"spec": {"selector": elsewhere}})),
        )
        .await
        .expect("edit the master Service");
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(t.admin.clone(), &t.name);
    config_maps
        .delete("cache-config", &DeleteParams::default())
        .await
        .expect("delete the ConfigMap");
    wait_for(
        "the master Service's selector and the ConfigMap put back",
        Duration::from_secs(30),
        || async {
            let svc = services
                .get("cache-master")
                .await
                .map_err(|e| e.to_string())?;
            let now = selector(&svc);
            if now != original {
                return Err(format!("selector {now:?}"));
            }
            config_maps
                .get_opt("cache-config")
                .await
                .map_err(|e| e.to_string())?
                .map(drop)
                .ok_or_else(|| "no ConfigMap".to_string())
        },
    )
    .await;
}
