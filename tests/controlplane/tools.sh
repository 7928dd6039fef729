#!/usr/bin/env bash
# tools.sh — install the external tools vigil's local-control-plane tests need.
#
# Usage: tests/controlplane/tools.sh
#
# Everything goes into a cache OUTSIDE the repo:
#
#   VIGIL_CACHE=${VIGIL_CACHE:-$HOME/.cache/vigil}
#   $VIGIL_CACHE/bin/<tool>-<version>/<tool>   immutable, keyed by version: bumping a pin rebuilds
#   $VIGIL_CACHE/bin/current/<tool>           stable symlinks to the pinned versions; use these
#   $VIGIL_CACHE/build/<name>-<version>/      generated wrapper Go modules and build.log
#
# Tools: etcd, kube-apiserver, kube-controller-manager, kubectl, helm, actionlint (built from
# their Go modules with the local Go toolchain, CGO_ENABLED=0 GOTOOLCHAIN=local), and iptables,
# redis-server, redis-cli, redis-sentinel from Debian (apt; the Debian service is never left running).
# Sentinel clients for the discovery tests: python-redis (redis-py from PyPI in a venv, pinned)
# and go-failover (tests/clients/go-failover built against its pinned go-redis, keyed by a hash
# of its sources), and the linearizability checker (tests/clients/linearizability, Porcupine);
# their modules are fetched here, on the host, as the tests run offline.
# Object storage for the backup tests (issue 16): versitygw, an S3-compatible server users run
# (its Go module, posix backend), and the AWS CLI (awscli from PyPI in a venv, pinned) as the
# stock S3 client they compare with.
# The Go module cache and build cache stay in Go's default places (~/go, ~/.cache/go-build).
#
# Idempotent: a tool whose versioned binary exists is reused ("cached"). Quiet apart from one
# line per tool. A cold run (empty Go module and build caches) on 2 cores took 6.5 minutes;
# Kubernetes dominates, so it is started first in the background and the rest built meanwhile.
# A warm run takes well under a second.
# Concurrent runs are serialised with flock on $VIGIL_CACHE/.lock.
# (Builds run as background subshells + `wait`, never as `( f ) || handler`: bash ignores
# `set -e` inside anything on the left of || / &&, which would hide build failures.)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ETCD_VERSION=v3.6.16
K8S_VERSION=v1.37.2
HELM_VERSION=v3.22.0
ACTIONLINT_VERSION=v1.7.12
REDIS_PY_VERSION=8.1.0
VERSITYGW_VERSION=v1.8.0
AWSCLI_VERSION=1.46.2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

tool_cache "tools.sh"

# ---------------------------------------------------------------- kubernetes
K8S_BINS=(kube-apiserver kube-controller-manager kubectl)

k8s_cached() {
  local b
  for b in "${K8S_BINS[@]}"; do [[ -x $BIN/$b-$K8S_VERSION/$b ]] || return 1; done
}

# Builds all three Kubernetes commands from ONE wrapper module (k8s_wrapper_module in lib.sh;
# shared build cache); it builds the upstream main packages k8s.io/kubernetes/cmd/<cmd>
# directly, so no main.go is needed.
k8s_build() {
  local out=$PWD/out ld
  k8s_wrapper_module "$K8S_VERSION" k8s.io/kubernetes/cmd/kube-apiserver/app \
    k8s.io/kubernetes/cmd/kube-controller-manager/app k8s.io/kubectl/pkg/cmd
  mkdir -p "$out"
  ld=$(k8s_ldflags "$K8S_VERSION")
  go build -trimpath -ldflags="$ld" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
  local v
  v=$("$out/kube-apiserver" --version)  # (no `| grep -q` under pipefail: SIGPIPE)
  [[ $v == "Kubernetes $K8S_VERSION" ]] || { echo "kube-apiserver --version: $v"; return 1; }
  local b
  for b in "${K8S_BINS[@]}"; do install_bin "$out/$b" "$b" "$K8S_VERSION"; done
}

K8S_PID=
K8S_T0=
if k8s_cached; then
  echo "kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kubectl): cached"
else
  echo "kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kubectl): building in background..."
  K8S_T0=$(now)
  # Own process group (set -m) so an early exit can stop the whole build (go + compilers);
  # 9>&-: the build must not hold the lock.
  set -m
  ( build kubernetes "$K8S_VERSION" k8s_build ) 9>&- &
  K8S_PID=$!
  set +m
fi
cleanup() { if [[ -n ${K8S_PID:-} ]]; then kill -TERM -- "-$K8S_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- etcd
etcd_build() {
  cat >go.mod <<EOF
module vigil.local/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat >main.go <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  go mod tidy
  # the server's go.mod replaces api/client/pkg with ../; pin the siblings to the same release
  local m
  for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
    if grep -q "go.etcd.io/etcd/$m " go.mod; then go mod edit -require="go.etcd.io/etcd/$m@$ETCD_VERSION"; fi
  done
  go mod tidy
  go build -trimpath -ldflags="-s -w" -o etcd .
  local v
  v=$(./etcd --version)
  [[ $v == *"etcd Version: ${ETCD_VERSION#v}"* ]] || { echo "$v"; return 1; }
  install_bin etcd etcd "$ETCD_VERSION"
}
go_tool etcd "$ETCD_VERSION"

# ---------------------------------------------------------------- helm
helm_build() {
  GOBIN=$PWD go install -trimpath \
    -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  local v
  v=$(./helm version --short)
  [[ $v == "$HELM_VERSION"* ]] || { echo "helm version: $v"; return 1; }
  install_bin helm helm "$HELM_VERSION"
}
go_tool helm "$HELM_VERSION"

# ---------------------------------------------------------------- actionlint
# `make lint` checks the GitHub workflows (.github/workflows: e2e, release) with it, so a broken
# workflow fails here rather than on GitHub. (It also runs shellcheck on their scripts when
# shellcheck is on PATH.)
actionlint_build() {
  GOBIN=$PWD go install -trimpath -ldflags="-s -w" "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  local v
  v=$(./actionlint -version | head -n 1)
  [[ $v == "$ACTIONLINT_VERSION" ]] || { echo "actionlint -version: $v"; return 1; }
  install_bin actionlint actionlint "$ACTIONLINT_VERSION"
}
go_tool actionlint "$ACTIONLINT_VERSION"

# ---------------------------------------------------------------- redis (Debian)
stop_debian_redis() {
  local svc
  for svc in redis-server redis-sentinel; do
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$svc ]]; then
      /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
      if command -v update-rc.d >/dev/null; then update-rc.d "$svc" disable >/dev/null 2>&1 || true; fi
    fi
  done
}

# iptables: the e2e tests inject faults on one process's network path (owner match).
# shellcheck: actionlint checks the workflows' scripts with it.
DEBIAN_BINARIES=(redis-server redis-cli redis-sentinel iptables shellcheck)
debian_missing() {
  local b
  for b in "${DEBIAN_BINARIES[@]}"; do command -v "$b" >/dev/null || return 0; done
  return 1
}
redis_version() { redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'; }
if ! debian_missing; then
  echo "redis $(redis_version), iptables (Debian): cached"
else
  echo "redis, iptables (Debian): installing..."
  t0=$(now)
  log=$BUILD/redis-apt.log
  apt_install "$log" redis-server redis-tools redis-sentinel iptables shellcheck
  stop_debian_redis
  echo "redis $(redis_version) (Debian): installed in $(( $(now) - t0 ))s"
fi
if port_busy 6379; then
  stop_debian_redis
  sleep 1
  if port_busy 6379; then
    echo "WARNING: something is listening on :6379 (not started by tools.sh); tests avoid that port" >&2
  fi
fi
for t in redis-server redis-cli redis-sentinel; do link "$t" "$(command -v "$t")"; done

# ---------------------------------------------------------------- Sentinel clients
# redis-py: a venv per version; the `complete` marker is written last, so an interrupted install
# never looks cached. The wrapper runs the venv's python whatever path it is called by.
py_venv=$BIN/python-redis-$REDIS_PY_VERSION
if [[ -f $py_venv/complete ]]; then
  echo "redis-py $REDIS_PY_VERSION: cached"
else
  echo "redis-py $REDIS_PY_VERSION: installing..."
  t0=$(now)
  log=$BUILD/redis-py.log
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install "$log" python3-venv
  fi
  rm -rf "$py_venv"
  { python3 -m venv "$py_venv/venv" && "$py_venv/venv/bin/pip" install -q "redis==$REDIS_PY_VERSION"; } \
    >"$log" 2>&1 || fail "redis-py $REDIS_PY_VERSION" "$log"
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$py_venv/venv/bin/python" >"$py_venv/python-redis"
  chmod +x "$py_venv/python-redis"
  touch "$py_venv/complete"
  echo "redis-py $REDIS_PY_VERSION: installed in $(( $(now) - t0 ))s"
fi
link python-redis "$py_venv/python-redis"

# ---------------------------------------------------------------- object storage
# versitygw: `go install` of its command (its go.mod has no replace directives). Its Makefile
# stamps the version with -X main.Version; so does this, or `--version` says "git".
versitygw_build() {
  GOBIN=$PWD go install -trimpath -ldflags="-s -w -X main.Version=$VERSITYGW_VERSION" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  local v
  v=$(./versitygw --version)
  [[ $v == *"Version  : $VERSITYGW_VERSION"* ]] || { echo "versitygw --version: $v"; return 1; }
  install_bin versitygw versitygw "$VERSITYGW_VERSION"
}
go_tool versitygw "$VERSITYGW_VERSION"

# The AWS CLI (v1: v2 is not on PyPI), a venv per version like redis-py's; the wrapper `aws`
# runs the venv's entry point whatever path it is called by.
aws_venv=$BIN/aws-$AWSCLI_VERSION
if [[ -f $aws_venv/complete ]]; then
  echo "awscli $AWSCLI_VERSION: cached"
else
  echo "awscli $AWSCLI_VERSION: installing..."
  t0=$(now)
  log=$BUILD/awscli.log
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install "$log" python3-venv
  fi
  rm -rf "$aws_venv"
  { python3 -m venv "$aws_venv/venv" && "$aws_venv/venv/bin/pip" install -q "awscli==$AWSCLI_VERSION" &&
      "$aws_venv/venv/bin/aws" --version; } >"$log" 2>&1 || fail "awscli $AWSCLI_VERSION" "$log"
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$aws_venv/venv/bin/aws" >"$aws_venv/aws"
  chmod +x "$aws_venv/aws"
  touch "$aws_venv/complete"
  echo "awscli $AWSCLI_VERSION: installed in $(( $(now) - t0 ))s"
fi
link aws "$aws_venv/aws"

# The Go programs of tests/clients, each keyed by a hash of its sources; their own tests run
# before they are installed (the linearizability checker's show it can fail).
go_client_hash() {
  cat "$ROOT/tests/clients/$1"/go.mod "$ROOT/tests/clients/$1"/go.sum "$ROOT/tests/clients/$1"/*.go |
    sha256sum | cut -c1-16
}
go_client_build() {
  local name=$1 out=$PWD src=$ROOT/tests/clients/$1
  (cd "$src" && go vet . && go test -count=1 . && go build -trimpath -ldflags="-s -w" -o "$out/$name" .)
  install_bin "$name" "$name" "$(go_client_hash "$name")"
}
go-failover_build() { go_client_build go-failover; }
linearizability_build() { go_client_build linearizability; }  # Porcupine
go_tool go-failover "$(go_client_hash go-failover)"
go_tool linearizability "$(go_client_hash linearizability)"
"$ROOT/tests/clients/install.sh"  # Jedis, Lettuce and ioredis clients (Maven Central, npm)

# ---------------------------------------------------------------- wait for kubernetes
if [[ -n $K8S_PID ]]; then
  rc=0
  wait "$K8S_PID" || rc=$?
  K8S_PID=  # reaped: cleanup must not signal its process group id any more
  built kubernetes "$K8S_VERSION" "$K8S_T0" "$rc"
fi
for b in "${K8S_BINS[@]}"; do link "$b" "$BIN/$b-$K8S_VERSION/$b"; done
