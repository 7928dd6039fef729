#!/usr/bin/env bash
# tests/demo.sh (make demo) — vigil on a machine with no cluster: builds what it needs (tools,
# vigil, the images of images/), starts a local control plane and a real node (tests/node/:
# kubelet, containerd; root, namespaces, cgroups), the operator (as the chart's ServiceAccount) and
# examples/redisreplication.yaml, prints how to reach it, and runs until interrupted, cleaning
# up on exit. Uses the cluster configured in KUBECONFIG instead when VIGIL_DEMO_USE_KUBECONFIG=1
# (then only the example is applied: install the operator with Helm first).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${VIGIL_DEMO_STATE:-$ROOT/target/demo}
cd "$ROOT"
# shellcheck source=tests/local-cluster.sh
source "$ROOT/tests/local-cluster.sh"

if [[ ${VIGIL_DEMO_USE_KUBECONFIG:-0} == 1 ]]; then
  kubectl apply -f "$ROOT/examples/redisreplication.yaml"
  kubectl -n demo wait --for=condition=Ready --timeout=300s redisreplication/cache
  kubectl -n demo get redisreplication cache
  exit 0
fi

# The cluster runs in a named network namespace, so pods get addresses of their own (10.244.0.N)
# and a second terminal can join it with `nsenter --net=/run/netns/vigil-demo ...`. nsenter, not
# `ip netns exec`: that one remounts /sys (hiding the cgroup mounts from the kubelet) in a
# private mount namespace (hiding the kubelet's volume mounts from containerd).
NETNS=vigil-demo
export VIGIL_NODE_IMAGES=$STATE.images
if [[ ${VIGIL_DEMO_INSIDE:-} != 1 ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "demo: needs root (it runs a kubelet and containerd)" >&2; exit 1; }
  "$ROOT/tests/node/tools.sh"  # (runs tests/controlplane/tools.sh first)
  echo "demo: building vigil"
  cargo build --quiet --workspace --bins
  # One real node per machine at a time (host sysctls, cgroup parent): an e2e run waits for us.
  exec 6>"${VIGIL_CACHE:-$HOME/.cache/vigil}/node.lock"
  flock 6
  "$ROOT/tests/node/images.sh" "${CARGO_TARGET_DIR:-target}/debug/vigil" "$VIGIL_NODE_IMAGES"
  ip netns del "$NETNS" 2>/dev/null || true
  ip netns add "$NETNS"
  INNER=(nsenter --net="/run/netns/$NETNS" env VIGIL_DEMO_INSIDE=1 "$0" "$@")
  status=0
  if [[ -t 0 ]]; then
    # On a terminal, job control runs the inner script as the terminal's foreground job: Ctrl-C
    # reaches it (it cleans up and exits 0) but not make, which would otherwise die of the
    # interrupt and report it however cleanly the demo stopped.
    set -m
    "${INNER[@]}" || status=$?
    set +m
  else
    "${INNER[@]}" &
    inner=$!
    # Pass a stop on to the inner script and wait until its cleanup is done; only then is the
    # network namespace empty and removable. `wait` returns 128+N when a trapped signal
    # interrupts it: only the last wait, which reaps the inner script, tells how it ended.
    trap 'kill -TERM "$inner" 2>/dev/null || true' INT TERM
    while kill -0 "$inner" 2>/dev/null; do
      status=0
      wait "$inner" || status=$?
    done
  fi
  ip netns del "$NETNS" 2>/dev/null || true
  exit "$status"
fi
ip link set lo up

OPERATOR_PID=
on_exit() {
  echo
  echo "demo: cleaning up"
  [[ -n $OPERATOR_PID ]] && kill -TERM "$OPERATOR_PID" 2>/dev/null || true
  local_cluster_down "$STATE"
  rm -rf "$STATE"
}
trap on_exit EXIT
trap 'exit 0' INT TERM

local_cluster_up "$STATE"
KUBECONFIG=$OPERATOR_KUBECONFIG "${CARGO_TARGET_DIR:-$ROOT/target}/debug/vigil" operator \
  --health-addr 127.0.0.1:8081 >"$ARTIFACTS/operator.log" 2>&1 &
OPERATOR_PID=$!

"$KUBECTL" apply -f "$ROOT/examples/redisreplication.yaml"
echo "demo: waiting for demo/cache to become Ready"
"$KUBECTL" -n demo wait --for=condition=Ready --timeout=300s redisreplication/cache >/dev/null
"$KUBECTL" -n demo get redisreplication cache
MASTER_IP=$("$KUBECTL" -n demo get redisreplication cache -o jsonpath='{.status.masterAddress}')
MASTER_IP=${MASTER_IP%:*}
# The operator's default --sentinel-addr (0.0.0.0:26379), reached on loopback in the namespace;
# the chart's Service is vigil-sentinel.<release namespace>:26379 on a real cluster.
SENTINEL=127.0.0.1:26379
MASTER_NAME=demo.cache
SENTINEL_ANSWER=$(timeout 10 redis-cli -h "${SENTINEL%:*}" -p "${SENTINEL##*:}" \
  SENTINEL get-master-addr-by-name "$MASTER_NAME" | tr '\n' ' ') || SENTINEL_ANSWER="no answer (see the operator log)"
echo "demo: the Sentinel endpoint $SENTINEL names the master of $MASTER_NAME: $SENTINEL_ANSWER"

cat <<INFO

vigil is running. In another terminal, join its network namespace (as root):

  nsenter --net=/run/netns/$NETNS bash
  export KUBECONFIG=$KUBECONFIG
  export PATH=$(dirname "$KUBECTL"):\$PATH
  kubectl -n demo get redisreplication cache -o yaml
  kubectl -n demo get pods -L redis.vigil.dev/role
  kubectl -n demo get endpointslices
  PASSWORD=\$(kubectl -n demo get secret cache-auth -o jsonpath='{.data.password}' | base64 -d)
  redis-cli -h $MASTER_IP -a "\$PASSWORD" --no-auth-warning INFO replication

Sentinel-compatible endpoint (what Sentinel clients are given): $SENTINEL, master name
$MASTER_NAME (<namespace>.<name>):

  redis-cli -h ${SENTINEL%:*} -p ${SENTINEL##*:} SENTINEL get-master-addr-by-name $MASTER_NAME

Pods run on $NODE_LINE,
each with its own address (10.244.0.N): \`kubectl -n demo logs cache-0\`; the cluster's logs are in
$STATE/logs. Operator log: $ARTIFACTS/operator.log
Press Ctrl-C to stop and clean up.
INFO
while kill -0 "$OPERATOR_PID" 2>/dev/null; do sleep 1; done
echo "demo: the operator exited; see $ARTIFACTS/operator.log" >&2
exit 1
