#!/usr/bin/env bash
# tests/kind/e2e.sh — the kind tier (DESIGN §7, tier 3): the scenarios of tests/e2e/ against real
# pods built from images/, on a kind cluster. Linux only: the per-test operators run on this host
# (as on the local tier) and reach pod IPs through a route to the kind node.
#
# Steps: build the test binary, the Sentinel clients and both images; create the kind cluster (or
# reuse it); load the images; route the pod network; `helm install` the chart (watching its own
# namespace only, so it never acts on the tests' namespaces) and smoke-test it; create a token of
# the chart's ServiceAccount for the per-test operators; run `cargo test --features e2e --test e2e`
# with VIGIL_E2E_TARGET=kind. On failure, cluster state and logs go to $VIGIL_E2E_STATE/artifacts.
#
# Environment:
#   VIGIL_KIND_CLUSTER  cluster name (default vigil-e2e); an existing cluster is reused and kept
#   VIGIL_KIND_KEEP=1   keep a cluster this run created (default: deleted at exit)
#   VIGIL_KIND_BUILD=0  do not build the images (they exist in the local Docker already)
#   KIND_NODE_IMAGE     node image (default: the kind release's)
#   VIGIL_E2E_TESTS     test-name filter (default: every test); extra arguments go to the binary
#   VIGIL_E2E_THREADS   tests in parallel (default 3)
#   VIGIL_E2E_STATE     kubeconfigs, clients, artifacts (default target/kind-e2e)
#   KUBECTL, HELM       commands to use (default: kubectl and helm from PATH)
# Needs docker, kind, kubectl, helm, cargo, go, python3 (venv), redis-cli, ip, and root or sudo for
# `ip route`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/controlplane/lib.sh
. "$ROOT/tests/controlplane/lib.sh"
CLUSTER=${VIGIL_KIND_CLUSTER:-vigil-e2e}
STATE=${VIGIL_E2E_STATE:-$ROOT/target/kind-e2e}
THREADS=${VIGIL_E2E_THREADS:-3}
ARTIFACTS=$STATE/artifacts
# The chart's release and the only namespace it watches; the tests' namespaces are e2e-*.
CHART_NS=vigil-operator
# The identity of the per-test operators, as on the local tier (tests/local-cluster.sh): the
# chart's ServiceAccount and RBAC rendered for vigil-system, which also holds the Lease of the
# leader-election tests.
IDENTITY_NS=vigil-system
cd "$ROOT"

KUBECTL=$(command -v "${KUBECTL:-kubectl}") || { echo "kind e2e: kubectl not found" >&2; exit 1; }
HELM=$(command -v "${HELM:-helm}") || { echo "kind e2e: helm not found" >&2; exit 1; }
REDIS_CLI=$(command -v redis-cli) || { echo "kind e2e: redis-cli not found (apt-get install redis-tools)" >&2; exit 1; }
for c in docker kind cargo go python3 ip; do
  command -v "$c" >/dev/null || { echo "kind e2e: $c not found" >&2; exit 1; }
done
SUDO=()
[[ $(id -u) -eq 0 ]] || SUDO=(sudo)

k() { "$KUBECTL" "$@"; }

mkdir -p "$STATE"
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
export KUBECONFIG=$STATE/kubeconfig
# Written once this run has a cluster: a failure before that has no cluster to collect from.
rm -f "$KUBECONFIG"
CREATED=
ROUTES=()

collect() {
  KUBECTL=$KUBECTL collect_cluster "$ARTIFACTS/cluster"
  timeout 300 kind export logs "$ARTIFACTS/kind" --name "$CLUSTER" >/dev/null 2>&1 || true
}

on_exit() {
  local code=$? route
  if [[ $code -ne 0 ]]; then
    if [[ -s $KUBECONFIG ]]; then
      echo "kind e2e: FAILED (exit $code); collecting logs" >&2
      collect
    fi
    echo "kind e2e: logs are in $ARTIFACTS (one <namespace>-operator.log per test)" >&2
  fi
  if [[ -n $CREATED && ${VIGIL_KIND_KEEP:-0} != 1 ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    for route in "${ROUTES[@]}"; do
      # shellcheck disable=SC2086 # "CIDR via IP", split on purpose
      "${SUDO[@]}" ip route del $route 2>/dev/null || true
    done
  fi
  exit "$code"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

echo "kind e2e: building the test binary"
cargo test --quiet --features e2e --test e2e --no-run

# The Sentinel clients of the discovery tests, at the pins tools.sh uses for the local tier
# (which would also build a whole control plane).
CLIENTS=$STATE/clients
if [[ -z ${VIGIL_E2E_CLIENTS:-} ]]; then
  echo "kind e2e: building the Sentinel clients"
  py_version=$(sed -n 's/^REDIS_PY_VERSION=//p' tests/controlplane/tools.sh)
  if [[ ! -f $CLIENTS/redis-py-$py_version ]]; then
    rm -rf "$CLIENTS/venv"
    python3 -m venv "$CLIENTS/venv"
    "$CLIENTS/venv/bin/pip" install -q "redis==$py_version"
    touch "$CLIENTS/redis-py-$py_version"
  fi
  # A wrapper, not a symlink: a venv's python finds its venv by the path it is started as.
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$CLIENTS/venv/bin/python" >"$CLIENTS/python-redis"
  chmod +x "$CLIENTS/python-redis"
  (cd tests/clients/go-failover && go build -buildvcs=false -trimpath -o "$CLIENTS/go-failover" .)
  VIGIL_E2E_CLIENTS=$CLIENTS
fi

# The images the chart and the operator's pods use by default: tagged with the appVersion.
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/vigil/Chart.yaml)
[[ -n $VERSION ]] || { echo "kind e2e: no appVersion in charts/vigil/Chart.yaml" >&2; exit 1; }
OPERATOR_IMAGE=ghcr.io/vigil-dev/vigil-operator:$VERSION
SERVER_IMAGE=ghcr.io/vigil-dev/vigil-server:$VERSION
if [[ ${VIGIL_KIND_BUILD:-1} != 0 ]]; then
  echo "kind e2e: building $OPERATOR_IMAGE and $SERVER_IMAGE"
  docker build -f images/operator/Dockerfile -t "$OPERATOR_IMAGE" .
  docker build -f images/server/Dockerfile -t "$SERVER_IMAGE" .
fi

# (grep without -q: under pipefail, an early exit could fail the pipeline with SIGPIPE.)
if kind get clusters 2>/dev/null | grep -x "$CLUSTER" >/dev/null; then
  echo "kind e2e: reusing cluster $CLUSTER"
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
  # Namespaces of earlier runs' failed tests.
  k get namespaces -o name | sed -nE 's#^namespace/(e2e-.*)$#\1#p' \
    | xargs -r "$KUBECTL" delete namespace --wait=false >/dev/null
else
  echo "kind e2e: creating cluster $CLUSTER"
  CREATED=1
  kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
# Scenarios that roll to "another" server image name it by tag: on kind it is this build too (as
# tests/node/images.sh tags it on the local node).
mapfile -t OTHER_TAGS < <(grep -ho "${SERVER_IMAGE%:*}:[A-Za-z0-9._-]*" tests/e2e/*.rs | sort -u \
  | grep -vxF "$SERVER_IMAGE")
for image in "${OTHER_TAGS[@]}"; do docker tag "$SERVER_IMAGE" "$image"; done
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$SERVER_IMAGE" "${OTHER_TAGS[@]}"

# Each node's pod range via that node's address on the Docker network.
while read -r cidr ip; do
  [[ -n $cidr && -n $ip ]] || continue
  "${SUDO[@]}" ip route replace "$cidr" via "$ip"
  ROUTES+=("$cidr via $ip")
done < <(k get nodes -o jsonpath='{range .items[*]}{.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
[[ ${#ROUTES[@]} -gt 0 ]] || { echo "kind e2e: no node has a pod CIDR to route to" >&2; exit 1; }

echo "kind e2e: installing the chart (watching $CHART_NS only)"
reinstall=
"$HELM" status vigil --namespace "$CHART_NS" >/dev/null 2>&1 && reinstall=1
"$HELM" upgrade --install vigil charts/vigil --namespace "$CHART_NS" --create-namespace \
  --set watchNamespace="$CHART_NS" >/dev/null
# A reused release keeps its pods: restart them on the images just loaded.
[[ -z $reinstall ]] || k -n "$CHART_NS" rollout restart deployment/vigil >/dev/null
k -n "$CHART_NS" rollout status deployment/vigil --timeout=180s
k wait --for=condition=Established --timeout=60s crd/redisreplications.redis.vigil.dev >/dev/null

echo "kind e2e: smoke test of the chart's operator"
k -n "$CHART_NS" delete redisreplication smoke --ignore-not-found --wait=true --timeout=120s >/dev/null
k -n "$CHART_NS" apply -f - >/dev/null <<EOF
apiVersion: redis.vigil.dev/v1alpha1
kind: RedisReplication
metadata:
  name: smoke
spec:
  instances: 2
EOF
k -n "$CHART_NS" wait --for=condition=Ready redisreplication/smoke --timeout=180s >/dev/null
master=$(k -n "$CHART_NS" get redisreplication smoke -o jsonpath='{.status.masterAddress}')
# The per-test operators and the checks connect to pod IPs from here.
# shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
timeout 10 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "${master%:*}" "${master##*:}" \
  || { echo "kind e2e: pod address $master is not reachable from this host (routes: ${ROUTES[*]})" >&2; exit 1; }

echo "kind e2e: the chart's ServiceAccount and RBAC for the per-test operators"
k get namespace "$IDENTITY_NS" >/dev/null 2>&1 || k create namespace "$IDENTITY_NS" >/dev/null
"$HELM" template vigil charts/vigil --namespace "$IDENTITY_NS" \
  --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
  --show-only templates/leader-election-rbac.yaml \
  | k apply --server-side -f - >/dev/null
OPERATOR_KUBECONFIG=$STATE/operator.kubeconfig
server=$(k config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.server}')
k config view --raw --minify --flatten \
  -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' \
  | base64 -d >"$STATE/ca.crt"
token=$(k -n "$IDENTITY_NS" create token vigil --duration=12h)
rm -f "$OPERATOR_KUBECONFIG"
kc=(--kubeconfig="$OPERATOR_KUBECONFIG")
k config "${kc[@]}" set-cluster kind --server="$server" \
  --certificate-authority="$STATE/ca.crt" --embed-certs=true >/dev/null
k config "${kc[@]}" set-credentials vigil --token="$token" >/dev/null
k config "${kc[@]}" set-context vigil --cluster=kind --user=vigil >/dev/null
k config "${kc[@]}" use-context vigil >/dev/null

echo "kind e2e: running the scenarios"
export VIGIL_E2E_TARGET=kind
export VIGIL_E2E_ADMIN_KUBECONFIG=$KUBECONFIG
export VIGIL_E2E_OPERATOR_KUBECONFIG=$OPERATOR_KUBECONFIG
export VIGIL_E2E_ARTIFACTS=$ARTIFACTS
export VIGIL_E2E_CLIENTS KUBECTL HELM REDIS_CLI
# A real kubelet's crash back-off doubles from 10 s: more crashes of one pod would outgrow the
# scenarios' 60 s waits.
export VIGIL_FAILOVER_RUNS=${VIGIL_FAILOVER_RUNS:-5}
filter=()
[[ -z ${VIGIL_E2E_TESTS:-} ]] || filter=("$VIGIL_E2E_TESTS")
cargo test --features e2e --test e2e -- --test-threads="$THREADS" --nocapture \
  "${filter[@]}" "$@"
