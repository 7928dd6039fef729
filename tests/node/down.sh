#!/usr/bin/env bash
# tests/node/down.sh STATE_DIR — stop the node tests/node/up.sh STATE_DIR started, and undo what
# it did outside STATE_DIR: the pods (sandboxes removed through the CRI, so CNI releases their
# addresses and network namespaces), leftover runc shims of this containerd, mounts under
# STATE_DIR/node, the cgroups under the node's own parent, the kubelet's log links in
# /var/log/containers, and the three host sysctls the kubelet rewrote. Safe to run again, and
# when nothing runs.
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 STATE_DIR" >&2
  exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../controlplane/lib.sh
. "$HERE/../controlplane/lib.sh"
# shellcheck source-path=SCRIPTDIR source=node.sh
. "$HERE/node.sh"
[[ -d $1 ]] || { echo "node down: $1 does not exist; nothing to do"; exit 0; }
# The physical path: the kernel lists mounts by it, and down.sh finds the kubelet's by prefix
# (CI links target/ to a shared directory).
STATE=$(cd "$1" && pwd -P)
node_paths "$STATE"
PIDS=$NODE_PIDS

# stop NAME: stop component NAME if it runs.
stop() {
  local pid
  if pid=$(alive_pid "$1"); then stop_pid "$1" "$pid" 15 >/dev/null; fi
  rm -f "$PIDS/$1.pid"
}

# The kubelet first, or it would restart what is removed next.
stop kubelet
# Removing the sandboxes through the CRI makes CNI release their addresses and containerd remove
# their network namespaces (files in the host's /run/netns, in containerd 1.6); the paths are
# noted first so that none outlives a failure.
pod_netns=()
if alive_pid containerd >/dev/null; then
  mapfile -t pod_netns < <("${CRICTL[@]}" pods -q 2>/dev/null | xargs -r "${CRICTL[@]}" inspectp -o go-template \
    --template '{{range .info.runtimeSpec.linux.namespaces}}{{if eq .type "network"}}{{.path}}{{"\n"}}{{end}}{{end}}' 2>/dev/null)
  if ! out=$("${CRICTL[@]}" rmp --force --all 2>&1); then
    echo "node down: removing the pod sandboxes failed; stopping containerd with them: $out" >&2
  fi
fi
stop kube-proxy
stop kube-scheduler
stop containerd
# Shims outlive containerd; these are the ones serving its socket.
for p in /proc/[0-9]*; do
  if [[ $(tr '\0' ' ' 2>/dev/null <"$p/cmdline") == *containerd-shim*"$CONTAINERD_SOCK"* ]]; then
    kill -KILL "${p#/proc/}" 2>/dev/null || true
  fi
done
# Mounts under the node's directory (volumes, snapshots, container rootfs), deepest first.
if [[ -d $NODE ]]; then
  findmnt -rn -o TARGET | { grep -F "$NODE/" || true; } | sort -r | while read -r m; do
    umount -l "$(printf '%b' "$m")" 2>/dev/null || true
  done
fi
for n in "${pod_netns[@]}"; do
  [[ $n == /run/netns/cni-* || $n == /var/run/netns/cni-* ]] || continue
  if mountpoint -q "$n"; then umount "$n" 2>/dev/null || umount -l "$n" 2>/dev/null || true; fi
  rm -f "$n"
done
# Cgroups: every hierarchy's vigil-node subtree, leaves first (all empty once the shims are gone).
for h in /sys/fs/cgroup/*/"$CGROUP_PARENT" /sys/fs/cgroup/"$CGROUP_PARENT"; do
  [[ -d $h ]] || continue
  find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
done
if [[ -d /var/log/containers ]]; then
  find /var/log/containers -maxdepth 1 -type l -lname "$NODE/*" -delete 2>/dev/null || true
fi
# The shims' socket directory is fixed in containerd 1.6 (/run/containerd/s); leave no empty
# directories behind.
rmdir /run/containerd/s /run/containerd 2>/dev/null || true
restore_host_sysctls
echo "node $NODE_NAME: stopped"
