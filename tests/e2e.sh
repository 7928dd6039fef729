#!/usr/bin/env bash
# tests/e2e.sh — run the end-to-end suite on a fresh local cluster (see tests/local-cluster.sh),
# then tear it down. Environment: VIGIL_E2E_STATE (default target/e2e), VIGIL_E2E_THREADS
# (default 3), VIGIL_E2E_TARGET (`local`: the kubelet stand-in, the default; `node`: the real
# node of tests/node/, with the images built from images/ in this run); extra arguments go to
# the test binary (e.g. a test name filter).
#
# Tools and binaries are built first, on the host (they need the package registries); the
# cluster and the tests then run inside a private network namespace, where pods get addresses
# of their own (10.244.0.N) and nothing can collide with, or reach, the host's network.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${VIGIL_E2E_STATE:-$ROOT/target/e2e}
THREADS=${VIGIL_E2E_THREADS:-3}
cd "$ROOT"

TARGET=${VIGIL_E2E_TARGET:-local}
case $TARGET in
  local | node) ;;
  *) echo "e2e: VIGIL_E2E_TARGET=$TARGET: expected local or node (kind: tests/kind/e2e.sh)" >&2; exit 2 ;;
esac
export VIGIL_E2E_TARGET=$TARGET
# The image list tests/node/images.sh writes (next to the state: local_cluster_up wipes that).
export VIGIL_NODE_IMAGES=$STATE.images

if [[ ${VIGIL_E2E_INSIDE:-} != 1 ]]; then
  if [[ $TARGET == node ]]; then
    "$ROOT/tests/node/tools.sh"  # (runs tests/controlplane/tools.sh first)
  else
    "$ROOT/tests/controlplane/tools.sh"
  fi
  echo "e2e: building"
  cargo build --quiet --workspace --bins
  cargo test --quiet --features e2e --test e2e --no-run
  # One run per state directory: a second one waits rather than wiping the first one's cluster.
  mkdir -p "$(dirname "$STATE")"
  exec 8>"$STATE.lock"
  flock 8
  if [[ $TARGET == node ]]; then
    # One real node per machine at a time, whatever its state directory: the host sysctls it
    # saves and restores, and its cgroup parent, are machine-wide.
    exec 6>"${VIGIL_CACHE:-$HOME/.cache/vigil}/node.lock"
    flock 6
    # The images, on the host (builds reach Debian's mirror), from the binary just built.
    "$ROOT/tests/node/images.sh" target/debug/vigil "$VIGIL_NODE_IMAGES"
  fi
  exec unshare --net -- env VIGIL_E2E_INSIDE=1 "$0" "$@"
fi

# shellcheck source=tests/controlplane/lib.sh
source "$ROOT/tests/controlplane/lib.sh"
# shellcheck source=tests/local-cluster.sh
source "$ROOT/tests/local-cluster.sh"
ip link set lo up

on_exit() {
  local code=$?
  if [[ $code -ne 0 && $TARGET == node && -s ${KUBECONFIG:-} ]]; then
    # Real pods' logs and state, of the namespaces the harness kept for failed tests.
    echo "e2e: collecting the cluster's state into $ARTIFACTS/cluster" >&2
    collect_cluster "$ARTIFACTS/cluster"
  fi
  local_cluster_down "$STATE"
  if [[ $code -ne 0 && -d ${ARTIFACTS:-} ]]; then
    echo "e2e: FAILED (exit $code); logs are in $ARTIFACTS and $STATE/logs" >&2
    for f in "$ARTIFACTS"/*.log; do
      [[ -f $f ]] || continue
      echo "----- last lines of $f" >&2
      tail -n 40 "$f" >&2
    done
  fi
  exit "$code"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

local_cluster_up "$STATE"

if [[ $TARGET == node ]]; then
  echo "e2e: running the scenarios on $NODE_LINE"
  # A real kubelet's crash back-off doubles from 10 s (the stand-in caps it at 10 s): more crashes
  # of one pod would outgrow the scenarios' 60 s waits.
  export VIGIL_FAILOVER_RUNS=${VIGIL_FAILOVER_RUNS:-5}
  export VIGIL_E2E_CRICTL=$VIGIL_TOOLS_BIN/crictl
  export CRI_CONFIG_FILE=$STATE/node/crictl.yaml
else
  echo "e2e: running the scenarios"
fi
export VIGIL_E2E_ADMIN_KUBECONFIG=$KUBECONFIG
export VIGIL_E2E_OPERATOR_KUBECONFIG=$OPERATOR_KUBECONFIG
export VIGIL_E2E_KUBELET_STATE=$KUBELET_STATE
export VIGIL_E2E_ARTIFACTS=$ARTIFACTS
REDIS_CLI=$(command -v redis-cli)
export REDIS_CLI
# The Sentinel clients tools.sh installed (python-redis, go-failover).
export VIGIL_E2E_CLIENTS=${VIGIL_CACHE:-$HOME/.cache/vigil}/bin/current
# --nocapture: the scenarios print measurements (failover timing) worth keeping in the log.
cargo test --offline --features e2e --test e2e -- --test-threads="$THREADS" --nocapture "$@"
