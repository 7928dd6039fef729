# shellcheck shell=bash
# tests/local-cluster.sh — sourced by tests/e2e.sh and tests/demo.sh: a local cluster made of the
# real control plane (tests/controlplane/up.sh), the CRD from crds/, the chart's ServiceAccount
# and RBAC, a kubeconfig holding a token of that ServiceAccount (so the operator acts with
# exactly the chart's permissions), and the real node (tests/node/up.sh: kubelet, containerd, the
# images of $VIGIL_NODE_IMAGES, which tests/node/images.sh wrote).
#
# local_cluster_up STATE  sets KUBECONFIG, KUBECTL, HELM, OPERATOR_KUBECONFIG, NODE_LINE (what
#                         runs the pods), ARTIFACTS;
# export_node_env STATE   exports what the test harness needs to reach the node's runtime;
# local_cluster_down STATE stops all of it.
# Expects ROOT (the repo), to run as root inside a private network namespace, and that
# `cargo build --workspace --bins` has run.

local_cluster_up() {
  local state=$1
  if [[ -d $state ]]; then
    # Fresh every time: nothing leaks from an earlier, maybe interrupted, run.
    if [[ -d $state/node ]]; then "$ROOT/tests/node/down.sh" "$state" >/dev/null 2>&1 || true; fi
    "$ROOT/tests/controlplane/down.sh" "$state" --purge >/dev/null 2>&1 || true
    rm -rf "$state"
  fi
  ARTIFACTS=$state/artifacts
  OPERATOR_KUBECONFIG=$state/operator.kubeconfig
  mkdir -p "$ARTIFACTS"

  # shellcheck source=tests/node/node.sh
  source "$ROOT/tests/node/node.sh"
  VIGIL_APISERVER_ADVERTISE_ADDRESS=$NODE_IP VIGIL_SKIP_TOOLS=1 \
    "$ROOT/tests/controlplane/up.sh" "$state"
  # shellcheck source=/dev/null
  source "$state/env"

  echo "local cluster: installing the CRD and the chart's ServiceAccount and RBAC"
  "$KUBECTL" apply --server-side -f "$ROOT/crds/" >/dev/null
  for crd in redisreplications redisbackups redisscheduledbackups; do
    wait_condition "crd/$crd.redis.vigil.dev" Established
  done
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

  echo "local cluster: starting the real node"
  "$ROOT/tests/node/up.sh" "$state" "$VIGIL_NODE_IMAGES"
  NODE_LINE=$(IMAGE_LIST=$VIGIL_NODE_IMAGES node_line)
  export KUBECONFIG KUBECTL HELM OPERATOR_KUBECONFIG NODE_LINE ARTIFACTS
}

export_node_env() {
  export VIGIL_E2E_CRICTL=$VIGIL_TOOLS_BIN/crictl
  # Test processes that pods must reach (the object store of the backup tests) listen on it.
  export VIGIL_E2E_NODE_IP=$NODE_IP
  export CRI_CONFIG_FILE=$1/node/crictl.yaml
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
  if [[ -d $state/node ]]; then "$ROOT/tests/node/down.sh" "$state" || true; fi
  "$ROOT/tests/controlplane/down.sh" "$state" >/dev/null 2>&1 || true
}
