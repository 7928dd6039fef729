#!/usr/bin/env bash
# tests/node/up.sh STATE_DIR IMAGE_LIST — start a real Kubernetes node next to the control plane
# that tests/controlplane/up.sh STATE_DIR runs (started with VIGIL_APISERVER_ADVERTISE_ADDRESS
# set to this node's address), inside the same private network namespace:
#
#   containerd (Debian's, CRI plugin) + runc, CNI bridge + host-local on 10.244.0.0/22,
#   the images of IMAGE_LIST (tests/node/images.sh) imported into containerd,
#   kubelet, kube-scheduler, kube-proxy (nftables mode; ClusterIP Services work from pods and
#   from this namespace), CoreDNS (kube-dns at 10.96.0.10), rancher's local-path-provisioner with
#   the default StorageClass `local-path`.
#
# Needs root, and refuses to run in the host's network namespace: it sets namespace-scoped
# sysctls and addresses. Everything lives in STATE_DIR/node (logs in STATE_DIR/logs); stop it with
# tests/node/down.sh STATE_DIR. The kubelet rewrites three host-wide sysctls when it starts; they
# are saved first in $VIGIL_CACHE/node/host-sysctls and restored by down.sh (and here, if a
# previous run died before restoring them).
# Environment: VIGIL_UP_TIMEOUT (seconds per wait step, default 120), VIGIL_UP_KEEP_ON_FAILURE=1.
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 STATE_DIR IMAGE_LIST" >&2
  exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../controlplane/lib.sh
. "$HERE/../controlplane/lib.sh"
# shellcheck source-path=SCRIPTDIR source=node.sh
. "$HERE/node.sh"
# The physical path: the kernel lists mounts by it, and down.sh finds the kubelet's by prefix
# (CI links target/ to a shared directory).
STATE=$(cd "$1" && pwd -P)
IMAGE_LIST=$2
node_paths "$STATE"
TIMEOUT=${VIGIL_UP_TIMEOUT:-120}
DOWN=("$HERE/down.sh" "$STATE")
T_START=$(now)

[[ $(id -u) -eq 0 ]] || { echo "node: needs root" >&2; exit 1; }
if [[ $(readlink /proc/self/ns/net) == "$(readlink /proc/1/ns/net)" ]]; then
  echo "node: refusing to run in the host's network namespace (run it inside unshare --net)" >&2
  exit 1
fi
[[ -s $STATE/env ]] || { echo "node: no control plane in $STATE (tests/controlplane/up.sh first)" >&2; exit 1; }
# shellcheck source=/dev/null
. "$STATE/env"
for b in kubelet kube-scheduler kube-proxy crictl; do
  [[ -x $CUR/$b ]] || { echo "node: $CUR/$b missing; run $HERE/tools.sh" >&2; exit 1; }
done
[[ -s $IMAGE_LIST ]] || { echo "node: no image list $IMAGE_LIST (tests/node/images.sh)" >&2; exit 1; }
if running_components | grep . >/dev/null; then
  echo "node: already (partly) running in $NODE: $(running_components | tr '\n' ' ')" >&2
  exit 1
fi
rm -rf "$NODE"
mkdir -p "$NODE" "$NODE_PIDS" "$LOGS"
PIDS=$NODE_PIDS

# ---------------------------------------------------------------- host sysctls
# A run that died before down.sh leaves the saved values: restore them before saving anew.
restore_host_sysctls
save_host_sysctls

# ---------------------------------------------------------------- this network namespace
# The node address: the kubelet refuses a loopback node IP, and this kernel has no dummy
# module, so a /32 on lo.
ip link set lo up
ip addr add "$NODE_IP/32" dev lo 2>/dev/null || true
sysctl -qw net.ipv4.ip_forward=1
# Service traffic DNATed to the apiserver on this namespace's addresses.
sysctl -qw net.ipv4.conf.all.route_localnet=1
# Bridged pod-to-Service-to-pod traffic must pass nftables, so replies are un-DNATed (a per-
# namespace setting on this kernel).
sysctl -qw net.bridge.bridge-nf-call-iptables=1
# Connections from this namespace to ClusterIPs need a route before kube-proxy's DNAT rewrites
# them (there is no default route here).
ip route replace "$SERVICE_CIDR" dev lo

# ---------------------------------------------------------------- containerd
mkdir -p "$NODE/containerd" "$NODE/cni/net.d" "$NODE/cni/ipam"
cat >"$NODE/cni/net.d/10-vigil.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "vigil-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$NODE/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
cat >"$NODE/containerd/config.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
# (the opt plugin would install into the host's /opt)
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = $RESTRICT_OOM_SCORE_ADJ
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state here rather than in the host's /run/containerd/runc.
        Root = "$NODE/runc"
EOF
cat >"$CRICTL_CONFIG" <<EOF
runtime-endpoint: unix://$CONTAINERD_SOCK
image-endpoint: unix://$CONTAINERD_SOCK
timeout: 60
EOF
start containerd /usr/bin/containerd --config "$NODE/containerd/config.toml"
wait_for containerd "the CRI on $CONTAINERD_SOCK" "${CRICTL[@]}" info

t0=$(now)
while read -r archive _ names; do
  ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$archive" >>"$LOGS/containerd.log" 2>&1 \
    || die_with_log containerd "importing $archive ($names) into containerd failed"
done <"$IMAGE_LIST"
echo "node: $(wc -l <"$IMAGE_LIST") images imported in $(( $(now) - t0 ))s"

# ---------------------------------------------------------------- kubelet
PKI=$STATE/pki
API=$VIGIL_APISERVER
leaf="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
(
  umask 077
  # The Node authorizer knows a kubelet by this name and group.
  sign "node-$NODE_NAME" "/O=system:nodes/CN=system:node:$NODE_NAME" "$leaf"
  sign kube-scheduler "/CN=system:kube-scheduler" "$leaf"
  sign kube-proxy "/CN=system:kube-proxy" "$leaf"
)
kubeconfig "$NODE/kubelet.kubeconfig" "node-$NODE_NAME"
kubeconfig "$NODE/kube-scheduler.kubeconfig" kube-scheduler
kubeconfig "$NODE/kube-proxy.kubeconfig" kube-proxy

mkdir -p "$NODE/kubelet" "$NODE/pod-logs" "$NODE/local-path"
# Pods with dnsPolicy Default get this: there is no upstream DNS in the namespace.
echo "# no upstream DNS inside the e2e network namespace" >"$NODE/kubelet/resolv.conf"
cat >"$NODE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Forced by this machine (see node.sh):
failCgroupV1: $FAIL_CGROUP_V1
cgroupDriver: $CGROUP_DRIVER
oomScoreAdj: $KUBELET_OOM_SCORE_ADJ
# Our own parent cgroup, so down.sh removes everything the node made in the host's hierarchies.
cgroupRoot: /$CGROUP_PARENT
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $NODE/kubelet/resolv.conf
podLogsDir: $NODE/pod-logs
# A shared test machine: evict only when really short, and never garbage-collect the imported
# images (nothing could pull them back).
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# The footprint benchmark runs up to 1,000 one-instance replications on this one node
# (default 110; the pod range above holds 1,021).
maxPods: 1100
# ConfigMap and Secret volumes follow their objects within seconds (the TLS and config tests).
syncFrequency: 10s
EOF
# The kubelet wants its cgroupRoot to exist in every hierarchy; a new cpuset starts empty.
for h in /sys/fs/cgroup/*/; do
  mkdir -p "$h$CGROUP_PARENT"
  if [[ -f $h/cpuset.cpus ]]; then
    cat "$h/cpuset.cpus" >"$h$CGROUP_PARENT/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h$CGROUP_PARENT/cpuset.mems"
  fi
done
start kubelet "$CUR/kubelet" --config "$NODE/kubelet/config.yaml" \
  --kubeconfig "$NODE/kubelet.kubeconfig" --root-dir "$NODE/kubelet/root" \
  --cert-dir "$NODE/kubelet/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
k() { "$KUBECTL" --request-timeout=5s "$@"; }
wait_for kubelet "node $NODE_NAME registered" k get node "$NODE_NAME"

# ---------------------------------------------------------------- scheduler, proxy
start kube-scheduler "$CUR/kube-scheduler" --kubeconfig "$NODE/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig "$NODE/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig "$NODE/kube-scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --v=1
cat >"$NODE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NODE/kube-proxy.kubeconfig}
mode: nftables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# 0: leave the conntrack sysctls alone (they are host-wide).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
start kube-proxy "$CUR/kube-proxy" --config "$NODE/kube-proxy.yaml" --v=1
wait_for kubelet "node $NODE_NAME Ready" node_ready
wait_for kube-proxy "kube-proxy healthz" curl -fsS http://127.0.0.1:10256/healthz

# ---------------------------------------------------------------- DNS and storage
subst() {
  sed -e "s|@DNS_IP@|$DNS_IP|g" -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" \
    -e "s|@LOCAL_PATH_IMAGE@|$LOCAL_PATH_IMAGE|g" -e "s|@BASE_IMAGE@|$BASE_IMAGE|g" \
    -e "s|@LOCAL_PATH_DIR@|$NODE/local-path|g" "$1"
}
for m in coredns local-path-provisioner; do
  subst "$HERE/manifests/$m.yaml" | k apply --server-side -f - >>"$LOGS/node-addons.log" 2>&1 \
    || die_with_log node-addons "applying $m failed"
done
wait_for kubelet "CoreDNS available" k -n kube-system wait --for=condition=Available --timeout=2s deployment/coredns
wait_for kubelet "local-path-provisioner available" k -n local-path-storage wait \
  --for=condition=Available --timeout=2s deployment/local-path-provisioner

echo "node: $(node_line)"
echo "node $NODE_NAME up in $(( $(now) - T_START ))s (state: $NODE)"
