# shellcheck shell=bash
# shellcheck disable=SC2034 # constants for the scripts that source this file
# tests/node/node.sh — the real node's constants and helpers, sourced by tests/node/*.sh and
# tests/local-cluster.sh (after tests/controlplane/lib.sh).

NODE_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VIGIL_CACHE=${VIGIL_CACHE:-$HOME/.cache/vigil}
CUR=$VIGIL_CACHE/bin/current

# ---------------------------------------------------------------- versions and image names
# Kubernetes is pinned in tests/controlplane/tools.sh (node and control plane match), the rest
# in tests/node/tools.sh.
pin() { sed -n "s/^$1=//p" "$2"; }
K8S_VERSION=$(pin K8S_VERSION "$NODE_HERE/../controlplane/tools.sh")
COREDNS_VERSION=$(pin COREDNS_VERSION "$NODE_HERE/tools.sh")
LOCAL_PATH_VERSION=$(pin LOCAL_PATH_VERSION "$NODE_HERE/tools.sh")
PAUSE_IMAGE=localhost/kubernetes-pause:$K8S_VERSION
COREDNS_IMAGE=localhost/coredns:$COREDNS_VERSION
LOCAL_PATH_IMAGE=localhost/local-path-provisioner:$LOCAL_PATH_VERSION
BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- addresses
NODE_NAME=vigil-node
# Not loopback (the kubelet refuses it), inside the e2e network namespace only.
NODE_IP=10.250.0.1
# Room for the footprint benchmark's 1,000 pods (a /24 holds 253).
POD_CIDR=10.244.0.0/22
SERVICE_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10

# ---------------------------------------------------------------- what this machine forces
# Every node setting that differs from a stock kubeadm node because of the machine, with why.
# cgroup v1 (no cgroup2 mount): kubelet 1.35+ refuses to start on v1 unless failCgroupV1 is
# false. The v1 support is deprecated: a risk to watch at each Kubernetes bump.
if [[ $(stat -fc %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs ]]; then
  CGROUP_VERSION=v2 FAIL_CGROUP_V1=true
else
  CGROUP_VERSION=v1 FAIL_CGROUP_V1=false
fi
# No systemd as PID 1 to delegate cgroups to: the kubelet and runc manage cgroupfs directly.
CGROUP_DRIVER=cgroupfs
# CAP_SYS_RESOURCE (capability 24) missing from the bounding set: runc cannot give a container a
# negative oom_score_adj (containerd must clamp it: restrict_oom_score_adj) and the kubelet
# cannot lower its own (oomScoreAdj 0 instead of -999). Privileged containers fail too; the
# tier runs none.
if (( (0x$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status) >> 24) & 1 )); then
  RESTRICT_OOM_SCORE_ADJ=false
  KUBELET_OOM_SCORE_ADJ=-999
else
  RESTRICT_OOM_SCORE_ADJ=true
  KUBELET_OOM_SCORE_ADJ=0
fi
# The parent of every cgroup the kubelet and runc make in the host's hierarchies.
CGROUP_PARENT=vigil-node

# The three host-wide sysctls the kubelet sets when it starts (it refuses to start instead with
# protectKernelDefaults). They are saved before and restored after.
HOST_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
SAVED_SYSCTLS=$VIGIL_CACHE/node/host-sysctls

# node_paths STATE: the node's directories inside the control plane's STATE_DIR.
node_paths() {
  NODE=$1/node
  NODE_PIDS=$NODE/pids
  LOGS=$1/logs
  CONTAINERD_SOCK=$NODE/containerd/containerd.sock
  # crictl's config (up.sh writes it): the tests find it through CRI_CONFIG_FILE.
  CRICTL_CONFIG=$NODE/crictl.yaml
  CRICTL=("$CUR/crictl" --config "$CRICTL_CONFIG")
}

NODE_COMPONENTS=(kube-proxy kube-scheduler kubelet containerd)
# running_components: the node's components that run, one a line.
running_components() {
  local c
  for c in "${NODE_COMPONENTS[@]}"; do
    if PIDS=$NODE_PIDS alive_pid "$c" >/dev/null; then echo "$c"; fi
  done
}

save_host_sysctls() {
  local s
  mkdir -p "${SAVED_SYSCTLS%/*}"
  for s in "${HOST_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$SAVED_SYSCTLS.tmp"
  mv "$SAVED_SYSCTLS.tmp" "$SAVED_SYSCTLS"
}

# restore_host_sysctls: put back the values save_host_sysctls kept, if any, then forget them.
restore_host_sysctls() {
  [[ -s $SAVED_SYSCTLS ]] || return 0
  local line
  while IFS= read -r line; do
    [[ $line =~ ^[a-z._]+=[0-9-]+$ ]] || continue
    [[ $(sysctl -n "${line%%=*}") == "${line#*=}" ]] || sysctl -qw "$line"
  done <"$SAVED_SYSCTLS"
  rm -f "$SAVED_SYSCTLS"
}

node_ready() {
  [[ $("$KUBECTL" --request-timeout=5s get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# node_line: one line naming the node: kubelet and runtime versions and the project's images.
node_line() {
  local kubelet runtime images=() ref id
  kubelet=$("$KUBECTL" --request-timeout=5s get node "$NODE_NAME" -o 'jsonpath={.status.nodeInfo.kubeletVersion}')
  runtime=$("$KUBECTL" --request-timeout=5s get node "$NODE_NAME" -o 'jsonpath={.status.nodeInfo.containerRuntimeVersion}')
  while read -r _ id ref; do
    [[ $ref == ghcr.io/vigil-dev/* ]] && images+=("${ref%%,*}@${id}")
  done <"$IMAGE_LIST"
  echo "node $NODE_NAME: kubelet $kubelet, $runtime (runc $(runc --version | sed -n 's/^runc version //p')), cgroup $CGROUP_VERSION, images ${images[*]}"
}
