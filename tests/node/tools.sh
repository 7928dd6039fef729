#!/usr/bin/env bash
# tests/node/tools.sh — install and build what the real node tier (tests/node/up.sh) needs, on
# top of tests/controlplane/tools.sh (which it runs first). Same cache and conventions:
# $VIGIL_CACHE/bin/<tool>-<version>/<tool>, stable links in $VIGIL_CACHE/bin/current, one line per
# tool, idempotent, serialised with the same flock.
#
#   Debian (apt):  containerd, runc, containernetworking-plugins (bridge, host-local, loopback,
#                  portmap), docker.io (dockerd is only ever started build-only by images.sh),
#                  debootstrap (the base image), nftables and conntrack (kube-proxy's nftables
#                  mode runs `nft` and `conntrack`). Services are kept from starting.
#   Go modules:    kubelet, kube-scheduler, kube-proxy at tools.sh's Kubernetes pin, from the same
#                  kind of wrapper module (shares its Go build cache); crictl; CoreDNS;
#                  local-path-provisioner (what kind ships as its dynamic provisioner).
#   C:             the Kubernetes pause binary from the kubernetes module's own source
#                  (build/pause/linux/pause.c), linked statically for a FROM-scratch image.
# The images made from these are built by tests/node/images.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../controlplane/lib.sh
. "$HERE/../controlplane/lib.sh"

# Kubernetes is pinned once, in tools.sh (the node must match the control plane).
K8S_VERSION=$(sed -n 's/^K8S_VERSION=//p' "$HERE/../controlplane/tools.sh")
[[ -n $K8S_VERSION ]] || { echo "node tools: no K8S_VERSION in tools.sh" >&2; exit 1; }
CRICTL_VERSION=v1.37.0
COREDNS_VERSION=v1.15.0
LOCAL_PATH_VERSION=v0.0.30

if [[ ${VIGIL_SKIP_TOOLS:-0} != 1 ]]; then
  "$HERE/../controlplane/tools.sh"
fi

tool_cache "node tools"

# ---------------------------------------------------------------- Debian packages
# package:command pairs; a missing command means the package is installed.
DEBIAN=(containerd:containerd runc:runc containernetworking-plugins:/usr/lib/cni/bridge
  docker.io:/usr/sbin/dockerd debootstrap:debootstrap nftables:nft conntrack:conntrack)
missing=()
for pair in "${DEBIAN[@]}"; do
  command -v "${pair#*:}" >/dev/null || missing+=("${pair%%:*}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "containerd $(containerd --version | awk '{print $3}'), runc, CNI plugins, dockerd, debootstrap, nft, conntrack (Debian): cached"
else
  echo "${missing[*]} (Debian): installing..."
  t0=$(now)
  apt_install "$BUILD/node-apt.log" "${missing[@]}"
  echo "${missing[*]} (Debian): installed in $(( $(now) - t0 ))s"
fi

# ---------------------------------------------------------------- kubelet, scheduler, proxy
NODE_BINS=(kubelet kube-scheduler kube-proxy)
node_cached() {
  local b
  for b in "${NODE_BINS[@]}"; do [[ -x $BIN/$b-$K8S_VERSION/$b ]] || return 1; done
}
kubernetes-node_build() {
  local out=$PWD/out ld v b
  k8s_wrapper_module "$K8S_VERSION" k8s.io/kubernetes/cmd/kubelet/app \
    k8s.io/kubernetes/cmd/kube-scheduler/app k8s.io/kubernetes/cmd/kube-proxy/app
  mkdir -p "$out"
  ld=$(k8s_ldflags "$K8S_VERSION")
  go build -trimpath -ldflags="$ld" -o "$out/" k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
  v=$("$out/kubelet" --version)
  [[ $v == "Kubernetes $K8S_VERSION" ]] || { echo "kubelet --version: $v"; return 1; }
  # The pause binary, from the same kubernetes module (its sources are in the module zip).
  local src
  src=$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  gcc -Os -static -DVERSION="$K8S_VERSION" -o "$out/pause" "$src"
  strip "$out/pause"
  for b in "${NODE_BINS[@]}" pause; do install_bin "$out/$b" "$b" "$K8S_VERSION"; done
}
if node_cached && [[ -x $BIN/pause-$K8S_VERSION/pause ]]; then
  echo "kubernetes node $K8S_VERSION (kubelet, kube-scheduler, kube-proxy, pause): cached"
else
  echo "kubernetes node $K8S_VERSION (kubelet, kube-scheduler, kube-proxy, pause): building..."
  t0=$(now)
  rc=0
  ( build kubernetes-node "$K8S_VERSION" kubernetes-node_build ) || rc=$?
  built "kubernetes node" "$K8S_VERSION" "$t0" "$rc"
fi
for b in "${NODE_BINS[@]}" pause; do link "$b" "$BIN/$b-$K8S_VERSION/$b"; done

# ---------------------------------------------------------------- crictl, CoreDNS, provisioner
crictl_build() {
  GOBIN=$PWD go install -trimpath \
    -ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  install_bin crictl crictl "$CRICTL_VERSION"
}
go_tool crictl "$CRICTL_VERSION"

coredns_build() {
  GOBIN=$PWD go install -trimpath -ldflags="-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  local v
  v=$(./coredns -version)
  [[ $v == *"CoreDNS-${COREDNS_VERSION#v}"* ]] || { echo "coredns -version: $v"; return 1; }
  install_bin coredns coredns "$COREDNS_VERSION"
}
go_tool coredns "$COREDNS_VERSION"

local-path-provisioner_build() {
  GOBIN=$PWD go install -trimpath -ldflags="-s -w" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
  install_bin local-path-provisioner local-path-provisioner "$LOCAL_PATH_VERSION"
}
go_tool local-path-provisioner "$LOCAL_PATH_VERSION"
