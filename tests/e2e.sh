#!/usr/bin/env bash
# tests/e2e.sh — run the end-to-end suite on a fresh local cluster (see tests/local-cluster.sh:
# the real control plane and the real node of tests/node/, with the images built from images/ in
# this run), then tear it down. Environment: VIGIL_E2E_STATE (default target/e2e),
# VIGIL_E2E_THREADS (default 3); extra arguments go to the test binary (e.g. a test name filter).
# (kind: tests/kind/e2e.sh.)
#
# Tools, binaries and images are built first, on the host (they need the package registries); the
# cluster and the tests then run inside a private network namespace, where pods get addresses
# of their own (10.244.0.N) and nothing can collide with, or reach, the host's network.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${VIGIL_E2E_STATE:-$ROOT/target/e2e}
THREADS=${VIGIL_E2E_THREADS:-3}
cd "$ROOT"

export VIGIL_E2E_TARGET=node
# The image list tests/node/images.sh writes (next to the state: local_cluster_up wipes that).
export VIGIL_NODE_IMAGES=$STATE.images

if [[ ${VIGIL_E2E_INSIDE:-} != 1 ]]; then
  "$ROOT/tests/node/tools.sh"  # (runs tests/controlplane/tools.sh first)
  echo "e2e: building"
  cargo build --quiet --workspace --bins
  cargo test --quiet --features e2e --test e2e --no-run
  # One run per state directory: a second one waits rather than wiping the first one's cluster.
  mkdir -p "$(dirname "$STATE")"
  exec 8>"$STATE.lock"
  flock 8
  # One real node per machine at a time, whatever its state directory: the host sysctls it
  # saves and restores, and its cgroup parent, are machine-wide.
  exec 6>"${VIGIL_CACHE:-$HOME/.cache/vigil}/node.lock"
  flock 6
  # The images, on the host (builds reach Debian's mirror), from the binary just built.
  "$ROOT/tests/node/images.sh" "${CARGO_TARGET_DIR:-target}/debug/vigil" "$VIGIL_NODE_IMAGES"
  exec unshare --net -- env VIGIL_E2E_INSIDE=1 "$0" "$@"
fi

# shellcheck source=tests/controlplane/lib.sh
source "$ROOT/tests/controlplane/lib.sh"
# shellcheck source=tests/local-cluster.sh
source "$ROOT/tests/local-cluster.sh"
ip link set lo up

on_exit() {
  local code=$?
  if [[ $code -ne 0 && -s ${KUBECONFIG:-} ]]; then
    # Real pods' logs and state, of the namespaces the harness kept for failed tests.
    echo "e2e: collecting the cluster's state into $ARTIFACTS/cluster" >&2
    collect_cluster "$ARTIFACTS/cluster"
  fi
  local_cluster_down "$STATE"
  if [[ $code -ne 0 && -d ${ARTIFACTS:-} ]]; then
    echo "e2e: FAILED (exit $code); logs are in $ARTIFACTS and $STATE/logs" >&2
    # The logs of the failed tests only: the harness keeps their namespaces, collect_cluster
    # made a directory for each.
    local ns f
    for ns in "$ARTIFACTS"/cluster/e2e-*/; do
      [[ -d $ns ]] || continue
      ns=$(basename "$ns")
      for f in "$ARTIFACTS/$ns"-*.log; do
        [[ -f $f ]] || continue
        echo "----- last lines of $f" >&2
        tail -n 40 "$f" >&2
      done
    done
    # Last, where a reader of the output's tail sees it: which tests failed, and why.
    if [[ -s $ARTIFACTS/tests.out ]]; then
      echo "----- failed tests and their panics" >&2
      grep -E '^test .* FAILED$' "$ARTIFACTS/tests.out" >&2 || true
      grep -A 8 -E "^thread '.*'( \([0-9]+\))? panicked at" "$ARTIFACTS/tests.out" | cut -c1-400 >&2 || true
    fi
  fi
  exit "$code"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

local_cluster_up "$STATE"

echo "e2e: running the scenarios on $NODE_LINE"
# A real kubelet's crash back-off doubles from 10 s: more crashes of one pod would outgrow the
# scenarios' 60 s waits.
export VIGIL_FAILOVER_RUNS=${VIGIL_FAILOVER_RUNS:-5}
export_node_env "$STATE"
export VIGIL_E2E_ADMIN_KUBECONFIG=$KUBECONFIG
export VIGIL_E2E_OPERATOR_KUBECONFIG=$OPERATOR_KUBECONFIG
export VIGIL_E2E_ARTIFACTS=$ARTIFACTS
REDIS_CLI=$(command -v redis-cli)
export REDIS_CLI
# The Sentinel clients tools.sh installed (python-redis, go-failover).
export VIGIL_E2E_CLIENTS=${VIGIL_CACHE:-$HOME/.cache/vigil}/bin/current
# --nocapture: the scenarios print measurements (failover timing) worth keeping in the log.
# A copy of the output for on_exit's summary of the failures.
cargo test --offline --features e2e --test e2e -- --test-threads="$THREADS" --nocapture "$@" 2>&1 \
  | tee "$ARTIFACTS/tests.out"
