#!/usr/bin/env bash
# up.sh STATE_DIR — start a real local Kubernetes control plane on loopback:
# etcd + kube-apiserver (RBAC, default admission plugins incl. PodSecurity) +
# kube-controller-manager (all default controllers: GC, namespace, serviceaccount(-token),
# root-ca-cert-publisher, endpoint(slice), node lifecycle, ...). No kubelet, no scheduler.
#
# Runs tools.sh first (quiet and ~instant when the tools are cached; set VIGIL_SKIP_TOOLS=1
# to skip it, then the binaries must already be in $VIGIL_CACHE/bin/current).
#
# STATE_DIR layout:
#   env                 source it: KUBECONFIG, VIGIL_APISERVER, KUBECTL, HELM, ...
#   admin.kubeconfig    cluster-admin (CN=admin, O=system:masters)
#   pki/                ca.{crt,key}, apiserver.{crt,key}, admin.{crt,key},
#                       kube-controller-manager.{crt,key}, sa.{key,pub},
#                       front-proxy-ca.{crt,key}, front-proxy-client.{crt,key} (aggregation layer)
#   etcd/               etcd data   logs/*.log   pids/*.pid
# Certificates and etcd data are kept across down.sh/up.sh (only down.sh --purge deletes them),
# so a restart keeps objects and service-account tokens valid.
#
# Environment: VIGIL_APISERVER_PORT (6443), VIGIL_ETCD_CLIENT_PORT (23790),
#   VIGIL_ETCD_PEER_PORT (23800), VIGIL_KCM_PORT (10357, controller-manager https),
#   VIGIL_APISERVER_ADVERTISE_ADDRESS (a non-loopback address of this network namespace, for a
#   real node's pods; default none: loopback only), VIGIL_CACHE (see tools.sh), VIGIL_UP_TIMEOUT (seconds per wait step, default 120),
#   VIGIL_UP_KEEP_ON_FAILURE=1 (on failure leave started components running; default: stop them).
# On failure: exit 1 with the reason and the tail of the failing component's log.
# If STATE_DIR already has a running control plane, says so and exits 0.
set -euo pipefail

if [[ $# -ne 1 || $1 == -* ]]; then
  echo "usage: $0 STATE_DIR" >&2
  exit 2
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"
mkdir -p "$1"
STATE=$(cd "$1" && pwd)
VIGIL_CACHE=${VIGIL_CACHE:-$HOME/.cache/vigil}
CUR=$VIGIL_CACHE/bin/current

API_PORT=${VIGIL_APISERVER_PORT:-6443}
ETCD_PORT=${VIGIL_ETCD_CLIENT_PORT:-23790}
ETCD_PEER_PORT=${VIGIL_ETCD_PEER_PORT:-23800}
KCM_PORT=${VIGIL_KCM_PORT:-10357}
ADVERTISE=${VIGIL_APISERVER_ADVERTISE_ADDRESS:-}
TIMEOUT=${VIGIL_UP_TIMEOUT:-120}
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
ISSUER=https://kubernetes.default.svc.cluster.local
API=https://127.0.0.1:$API_PORT
COMPONENTS=(etcd kube-apiserver kube-controller-manager)

PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$STATE/pids
mkdir -p "$PKI" "$LOGS" "$PIDS"
T_START=$(date +%s)

running=() stopped=()
for c in "${COMPONENTS[@]}"; do
  if alive_pid "$c" >/dev/null; then running+=("$c"); else stopped+=("$c"); fi
done
if [[ ${#stopped[@]} -eq 0 ]]; then
  echo "control plane already running in $STATE (pids: $(cat "$PIDS"/*.pid | tr '\n' ' '))"
  echo "  source $STATE/env"
  exit 0
fi
if [[ ${#running[@]} -gt 0 ]]; then
  echo "up.sh: partial control plane in $STATE: running: ${running[*]}; not running: ${stopped[*]}" >&2
  echo "up.sh: run '$HERE/down.sh $STATE' first" >&2
  exit 1
fi

if [[ ${VIGIL_SKIP_TOOLS:-0} != 1 ]]; then
  "$HERE/tools.sh"
fi
for b in etcd kube-apiserver kube-controller-manager kubectl helm; do
  [[ -x $CUR/$b ]] || { echo "up.sh: $CUR/$b missing; run $HERE/tools.sh" >&2; exit 1; }
done
KUBECTL=$CUR/kubectl

for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT" "$KCM_PORT"; do
  if port_busy "$p"; then
    echo "up.sh: TCP port $p is already in use:" >&2
    ss -Hltnp "sport = :$p" >&2 || true
    exit 1
  fi
done

# ---------------------------------------------------------------- PKI (generated once)
(
  umask 077
  new_ca ca vigil-local-ca "$PKI"/*.crt "$PKI"/*.key
  leaf="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment"
  sign apiserver "/CN=kube-apiserver" "$leaf
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign admin "/O=system:masters/CN=admin" "$leaf
extendedKeyUsage=clientAuth"
  sign kube-controller-manager "/CN=system:kube-controller-manager" "$leaf
extendedKeyUsage=clientAuth"
  # The apiserver's identity towards kubelets (logs, exec, port-forward on a real node).
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$leaf
extendedKeyUsage=clientAuth"
  # front-proxy (aggregation layer / requestheader authn): a separate CA, as in kubeadm
  new_ca front-proxy-ca vigil-front-proxy-ca "$PKI"/front-proxy-client.*
  CA=front-proxy-ca sign front-proxy-client "/CN=front-proxy-client" "$leaf
extendedKeyUsage=clientAuth"
  if [[ ! -s $PKI/sa.key || ! -s $PKI/sa.pub ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
)

kubeconfig "$STATE/admin.kubeconfig" admin
kubeconfig "$STATE/kube-controller-manager.kubeconfig" kube-controller-manager

cat >"$STATE/env" <<EOF
# generated by tests/controlplane/up.sh — source this file
export KUBECONFIG=$STATE/admin.kubeconfig
export VIGIL_APISERVER=$API
export VIGIL_CP_STATE=$STATE
export VIGIL_CA_FILE=$PKI/ca.crt
export VIGIL_TOOLS_BIN=$CUR
export KUBECTL=$CUR/kubectl
export HELM=$CUR/helm
EOF

# ---------------------------------------------------------------- processes
# (start, wait_for: lib.sh; DOWN is what a failed wait runs to stop what was started)
DOWN=("$HERE/down.sh" "$STATE")

mkdir -p "$STATE/etcd"
start etcd "$CUR/etcd" \
  --name vigil \
  --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "vigil=http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster-state new \
  --unsafe-no-fsync \
  --quota-backend-bytes $((4 * 1024 * 1024 * 1024)) \
  --log-level warn
wait_for etcd "etcd /health" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

# Without a node address the apiserver advertises loopback, which the `kubernetes` Endpoints
# may not hold; with one (the real node tier, inside its own network namespace) it listens on
# every address of that namespace and publishes the node address, so pods reach it through the
# `kubernetes` Service.
if [[ -n $ADVERTISE ]]; then
  address_flags=(--bind-address=0.0.0.0 --advertise-address="$ADVERTISE" --endpoint-reconciler-type=lease)
else
  address_flags=(--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none)
fi
start kube-apiserver "$CUR/kube-apiserver" \
  "${address_flags[@]}" \
  --secure-port="$API_PORT" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --authorization-mode=Node,RBAC \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP,Hostname \
  --client-ca-file="$PKI/ca.crt" \
  --tls-cert-file="$PKI/apiserver.crt" \
  --tls-private-key-file="$PKI/apiserver.key" \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer="$ISSUER" \
  --api-audiences="$ISSUER" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --allow-privileged=false \
  --anonymous-auth=true \
  --v=1
wait_for kube-apiserver "$API/readyz" "$KUBECTL" --kubeconfig "$STATE/admin.kubeconfig" \
  --request-timeout=5s get --raw /readyz

start kube-controller-manager "$CUR/kube-controller-manager" \
  --kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$KCM_PORT" \
  --cert-dir="$STATE/kcm-certs" \
  --leader-elect=false \
  --controllers='*' \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" \
  --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --v=1

k() { "$KUBECTL" --kubeconfig "$STATE/admin.kubeconfig" --request-timeout=5s "$@"; }
wait_for kube-controller-manager "ServiceAccount default/default" k -n default get serviceaccount default
wait_for kube-controller-manager "ConfigMap default/kube-root-ca.crt" k -n default get configmap kube-root-ca.crt

echo "control plane up in $(( $(date +%s) - T_START ))s: $API (state: $STATE)"
echo "  source $STATE/env"
