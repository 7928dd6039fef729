#!/usr/bin/env bash
# tests/bench.sh — `make bench`: vigil vs Redis Sentinel side by side, and the operator's
# footprint, on a fresh local cluster (tests/local-cluster.sh) torn down afterwards. Prints the
# results and writes them to bench/results/<date>.md (tests/bench/main.rs lists the BENCH_*
# settings, e.g. BENCH_RUNS=3 for a quick run, BENCH_OUT=<file> to write elsewhere).
# Environment: VIGIL_BENCH_STATE (default target/bench: its own cluster, never an e2e run's).
#
# As tests/e2e.sh: tools, binaries and images are built on the host first; the cluster (the real
# node of tests/node/), the Sentinel set and the clients then run inside a private network
# namespace. The benchmark binary and the operator it measures are release builds; the pods run
# the images built from images/ with the release `vigil` binary.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${VIGIL_BENCH_STATE:-$ROOT/target/bench}
cd "$ROOT"
export VIGIL_E2E_TARGET=node VIGIL_NODE_IMAGES=$STATE.images

if [[ ${VIGIL_BENCH_INSIDE:-} != 1 ]]; then
  BENCH_STARTED_AT=$(date +%s)
  export BENCH_STARTED_AT
  "$ROOT/tests/node/tools.sh"  # (runs tests/controlplane/tools.sh first)
  echo "bench: building"
  cargo build --quiet --release --workspace --bins
  cargo test --quiet --release --features e2e --test bench --no-run
  # One run per state directory: a second one waits rather than wiping the first one's cluster.
  mkdir -p "$(dirname "$STATE")"
  exec 8>"$STATE.lock"
  flock 8
  # One real node per machine at a time (see tests/e2e.sh).
  exec 6>"${VIGIL_CACHE:-$HOME/.cache/vigil}/node.lock"
  flock 6
  "$ROOT/tests/node/images.sh" "${CARGO_TARGET_DIR:-target}/release/vigil" "$VIGIL_NODE_IMAGES"
  exec unshare --net -- env VIGIL_BENCH_INSIDE=1 "$0" "$@"
fi

# shellcheck source=tests/local-cluster.sh
source "$ROOT/tests/local-cluster.sh"
ip link set lo up

on_exit() {
  local code=$?
  local_cluster_down "$STATE"
  if [[ $code -ne 0 && -d ${ARTIFACTS:-} ]]; then
    echo "bench: FAILED (exit $code); logs are in $ARTIFACTS and $STATE/logs" >&2
  fi
  exit "$code"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

local_cluster_up "$STATE"

echo "bench: measuring on $NODE_LINE"
export BENCH_NODE_LINE=$NODE_LINE
export_node_env "$STATE"
export VIGIL_E2E_ADMIN_KUBECONFIG=$KUBECONFIG
export VIGIL_E2E_OPERATOR_KUBECONFIG=$OPERATOR_KUBECONFIG
export VIGIL_E2E_ARTIFACTS=$ARTIFACTS
REDIS_CLI=$(command -v redis-cli)
REDIS_SERVER=$(command -v redis-server)
REDIS_SENTINEL=$(command -v redis-sentinel)
export REDIS_CLI REDIS_SERVER REDIS_SENTINEL
export VIGIL_E2E_CLIENTS=${VIGIL_CACHE:-$HOME/.cache/vigil}/bin/current
cargo test --quiet --offline --release --features e2e --test bench -- \
  --test-threads=1 --nocapture "$@"
