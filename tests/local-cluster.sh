# shellcheck shell=bash
# tests/local-cluster.sh — sourced by tests/e2e.sh and tests/demo.sh: a local cluster made of the
# real control plane (tests/controlplane/up.sh), the CRD from crds/, the chart's ServiceAccount
# and RBAC, a kubeconfig holding a token of that ServiceAccount (so the operator acts with
# exactly the chart's permissions), and a node: with VIGIL_E2E_TARGET=node the real one
# (tests/node/up.sh: kubelet, containerd, the images of $VIGIL_NODE_IMAGES), else the
# process-based kubelet stand-in.
#
# local_cluster_up STATE  sets KUBECONFIG, KUBECTL, HELM, OPERATOR_KUBECONFIG, KUBELET_STATE (the
#                         stand-in's) or NODE_LINE (the real node's), ARTIFACTS;
#                         local_cluster_down STATE stops all of it.
# Expects ROOT (the repo) and that `cargo build --workspace --bins` has run.

KUBELET_PID=

local_cluster_up() {
  local state=$1
  if [[ -d $state ]]; then
    # Fresh every time: nothing leaks from an earlier, maybe interrupted, run.
    if [[ -d $state/node ]]; then "$ROOT/tests/node/down.sh" "$state" >/dev/null 2>&1 || true; fi
    "$ROOT/tests/controlplane/down.sh" "$state" --purge >/dev/null 2>&1 || true
    rm -rf "$state"
  fi
  ARTIFACTS=$state/artifacts
  KUBELET_STATE=$state/kubelet
  OPERATOR_KUBECONFIG=$state/operator.kubeconfig
  mkdir -p "$ARTIFACTS" "$KUBELET_STATE"

  if [[ ${VIGIL_E2E_TARGET:-local} == node ]]; then
    # shellcheck source=tests/node/node.sh
    source "$ROOT/tests/node/node.sh"
    VIGIL_APISERVER_ADVERTISE_ADDRESS=$NODE_IP VIGIL_SKIP_TOOLS=1 \
      "$ROOT/tests/controlplane/up.sh" "$state"
  else
    VIGIL_SKIP_TOOLS=1 "$ROOT/tests/controlplane/up.sh" "$state"
  fi
  # shellcheck source=/dev/null
  source "$state/env"

  echo "local cluster: installing the CRD and the chart's ServiceAccount and RBAC"
  "$KUBECTL" apply --server-side -f "$ROOT/crds/" >/dev/null
  wait_condition crd/redisreplications.redis.vigil.dev Established
  "$KUBECTL" create namespace vigil-system >/dev/null
  "$HELM" template vigil "$ROOT/charts/vigil" --namespace vigil-system \
    --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
    --show-only templates/leader-election-rbac.yaml \
    | "$KUBECTL" apply --server-side -f - >/dev/null

  local token
  token=$("$KUBECTL" -n vigil-system create token vigil --duration=12h)
  local kc=(--kubeconfig="$OPERATOR_KUBECONFIG")
  "$KUBECTL" config "${kc[@]}" set-cluster local --server="$VIGIL_APISERVER" \
    --certificate-authority="$state/pki/ca.crt" --embed-certs=true >/dev/null
  "$KUBECTL" config "${kc[@]}" set-credentials vigil --token="$token" >/dev/null
  "$KUBECTL" config "${kc[@]}" set-context vigil --cluster=local --user=vigil >/dev/null
  "$KUBECTL" config "${kc[@]}" use-context vigil >/dev/null

  if [[ ${VIGIL_E2E_TARGET:-local} == node ]]; then
    echo "local cluster: starting the real node"
    "$ROOT/tests/node/up.sh" "$state" "$VIGIL_NODE_IMAGES"
    NODE_LINE=$(IMAGE_LIST=$VIGIL_NODE_IMAGES node_line)
    export NODE_LINE
  else
    start_standin "$state"
  fi
  export KUBECONFIG KUBECTL HELM OPERATOR_KUBECONFIG KUBELET_STATE ARTIFACTS
}

start_standin() {
  echo "local cluster: starting the kubelet stand-in"
  "$ROOT/target/debug/vigil-testkubelet" \
    --kubeconfig "$KUBECONFIG" --node-name vigil-node --state-dir "$KUBELET_STATE" \
    --bin-dir "$ROOT/target/debug" --apiserver-host 127.0.0.1 \
    --apiserver-port "${VIGIL_APISERVER##*:}" --ip-range-start "${VIGIL_KUBELET_IP_START:-10}" \
    >"$ARTIFACTS/kubelet.log" 2>&1 &
  KUBELET_PID=$!
  for _ in $(seq 1 120); do
    "$KUBECTL" get node vigil-node >/dev/null 2>&1 && break
    kill -0 "$KUBELET_PID" 2>/dev/null || { tail -n 30 "$ARTIFACTS/kubelet.log" >&2; return 1; }
    sleep 0.5
  done
  wait_condition node/vigil-node Ready
}

# wait_condition OBJECT TYPE: waits (60 s at most) for condition TYPE of OBJECT to be True.
# (`kubectl wait` fails at once, instead of waiting, while the object has no conditions yet.)
wait_condition() {
  local got
  for _ in $(seq 1 240); do
    got=$("$KUBECTL" get "$1" -o "jsonpath={.status.conditions[?(@.type==\"$2\")].status}" 2>/dev/null) || true
    [[ $got == True ]] && return 0
    sleep 0.25
  done
  echo "local cluster: $1 is not $2 after 60s (last: ${got:-no condition})" >&2
  return 1
}

local_cluster_down() {
  local state=$1
  if [[ -n $KUBELET_PID ]] && kill -0 "$KUBELET_PID" 2>/dev/null; then
    # The stand-in stops every pod process it started before it exits.
    kill -TERM "$KUBELET_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$KUBELET_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$KUBELET_PID" 2>/dev/null || true
  fi
  if [[ ${VIGIL_E2E_TARGET:-local} == node ]]; then
    "$ROOT/tests/node/down.sh" "$state" || true
  fi
  "$ROOT/tests/controlplane/down.sh" "$state" >/dev/null 2>&1 || true
}
