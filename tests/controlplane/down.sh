#!/usr/bin/env bash
# down.sh [--purge] STATE_DIR — stop the control plane started by up.sh STATE_DIR.
# SIGTERM to each component (controller-manager, apiserver, etcd, in that order), waits up to
# VIGIL_DOWN_TIMEOUT seconds (default 15) for each, then SIGKILL. Only pids recorded in
# STATE_DIR/pids that still run the expected binary are signalled.
# Keeps STATE_DIR (certs, etcd data, logs) unless --purge is given, which deletes it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
args=()
for a in "$@"; do
  case $a in
    --purge) purge=1 ;;
    -*) echo "usage: $0 [--purge] STATE_DIR" >&2; exit 2 ;;
    *) args+=("$a") ;;
  esac
done
if [[ ${#args[@]} -ne 1 ]]; then
  echo "usage: $0 [--purge] STATE_DIR" >&2
  exit 2
fi
STATE=${args[0]}
PIDS=$STATE/pids
TIMEOUT=${VIGIL_DOWN_TIMEOUT:-15}

if [[ ! -d $STATE ]]; then
  echo "down.sh: $STATE does not exist; nothing to do"
  exit 0
fi

for c in kube-controller-manager kube-apiserver etcd; do
  if pid=$(alive_pid "$c"); then stop_pid "$c" "$pid" "$TIMEOUT"; fi
  rm -f "$PIDS/$c.pid"
done

if [[ $purge == 1 ]]; then
  rm -rf "$STATE"
  echo "purged $STATE"
fi
