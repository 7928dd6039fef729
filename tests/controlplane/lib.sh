# shellcheck shell=bash
# lib.sh — helpers shared by the tier's scripts (tools.sh, up.sh, down.sh and tests/node/*.sh);
# sourced, not run.

# alive_pid NAME: pid of component NAME if $PIDS/NAME.pid names a live process running that
# binary, else fails.
alive_pid() {
  local f=$PIDS/$1.pid pid
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"$1"* ]] || return 1
  echo "$pid"
}

# port_busy PORT: something listens on TCP PORT.
port_busy() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

# running PID: the process exists and is not a zombie (an un-reaped zombie counts as gone).
running() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}

# stop_pid NAME PID TIMEOUT: SIGTERM, up to TIMEOUT seconds for the exit, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 timeout=$3 deadline
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(date +%s) + timeout ))
  while running "$pid" && (( $(date +%s) < deadline )); do sleep 0.2; done
  if running "$pid"; then
    echo "$name (pid $pid): no exit after ${timeout}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
  fi
  echo "$name (pid $pid): stopped"
}

# collect_cluster DIR: what a failed e2e run leaves to read, from the cluster $KUBECTL reaches:
# the objects, and for the chart's namespaces and those the harness kept for failed tests,
# pod descriptions, events and every container's logs (also the previous run's). Every request
# is bounded, so a broken cluster cannot hang the exit.
collect_cluster() {
  local dir=$1 ns pod kq=("$KUBECTL" --request-timeout=30s)
  mkdir -p "$dir"
  "${kq[@]}" get nodes,pods,services,endpointslices,pvc,pv -A -o wide >"$dir/get.txt" 2>&1 || true
  "${kq[@]}" get redisreplications -A -o yaml >"$dir/redisreplications.yaml" 2>&1 || true
  for ns in $("${kq[@]}" get namespaces -o name 2>/dev/null | sed -nE 's#^namespace/((e2e|vigil)-.*)$#\1#p'); do
    mkdir -p "$dir/$ns"
    "${kq[@]}" -n "$ns" describe pods >"$dir/$ns/pods.txt" 2>&1 || true
    "${kq[@]}" -n "$ns" get events --sort-by=.lastTimestamp >"$dir/$ns/events.txt" 2>&1 || true
    for pod in $("${kq[@]}" -n "$ns" get pods -o name | sed 's|^pod/||'); do
      "${kq[@]}" -n "$ns" logs "$pod" --all-containers --prefix >"$dir/$ns/$pod.log" 2>&1 || true
      "${kq[@]}" -n "$ns" logs "$pod" --all-containers --prefix --previous >"$dir/$ns/$pod.previous.log" 2>/dev/null \
        || rm -f "$dir/$ns/$pod.previous.log"
    done
  done
}

# ---------------------------------------------------------------- daemons (up.sh, node)
# These expect LOGS and PIDS (directories), TIMEOUT (seconds per wait) and DOWN (the command,
# as an array, that stops what was started, run when a wait fails).

# start NAME COMMAND ARGS...: run COMMAND in its own session (survives the caller's process
# group), output appended to $LOGS/NAME.log, pid in $PIDS/NAME.pid.
start() {
  local name=$1; shift
  echo "=== $(date -u +%FT%TZ) starting $name" >>"$LOGS/$name.log"
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}

# die_with_log NAME MSG: report MSG with the tail of NAME's log, stop what was started (unless
# VIGIL_UP_KEEP_ON_FAILURE=1) and exit 1.
die_with_log() {
  echo "${0##*/}: $2" >&2
  echo "---- last 40 lines of $LOGS/$1.log" >&2
  tail -n 40 "$LOGS/$1.log" >&2 || true
  if [[ ${VIGIL_UP_KEEP_ON_FAILURE:-0} == 1 ]]; then
    echo "---- (components left running; stop them with ${DOWN[*]})" >&2
  else
    echo "---- stopping what was started (logs kept in $LOGS)" >&2
    "${DOWN[@]}" >&2 || true
  fi
  exit 1
}

# wait_for NAME WHAT CMD...: poll CMD until it succeeds; NAME's log is shown on failure,
# and failure is immediate if NAME's process exits.
wait_for() {
  local name=$1 what=$2; shift 2
  # shellcheck disable=SC2153 # TIMEOUT: set by the script that sources this file
  local deadline=$(( $(date +%s) + TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    alive_pid "$name" >/dev/null || die_with_log "$name" "$name exited while waiting for $what"
    (( $(date +%s) < deadline )) || die_with_log "$name" "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
}

# ---------------------------------------------------------------- certificates (up.sh, node)
# These expect PKI (the control plane's pki/ directory) and, for kubeconfig, API (its URL).

# have NAME: $PKI/NAME.crt and $PKI/NAME.key both exist.
have() { [[ -s $PKI/$1.crt && -s $PKI/$1.key ]]; }
# new_ca NAME CN STALE...: self-signed CA NAME unless present; a new CA first deletes the STALE
# files (certificates the old one signed).
new_ca() {
  local name=$1 cn=$2; shift 2
  have "$name" && return 0
  rm -f "$@"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.crt" \
    -days 3650 -sha256 -subj "/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}
# [CA=name] sign NAME SUBJ EXTENSIONS: key + cert signed by $CA (default: ca), unless present.
sign() {
  local name=$1 subj=$2 ext=$3
  have "$name" && return 0
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/${CA:-ca}.crt" -CAkey "$PKI/${CA:-ca}.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
    -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
# kubeconfig FILE USER: kubeconfig for the apiserver with the USER client cert.
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vigil
  cluster:
    server: $API
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$2.crt")
    client-key-data: $(base64 -w0 <"$PKI/$2.key")
contexts:
- name: vigil
  context:
    cluster: vigil
    user: $2
    namespace: default
current-context: vigil
EOF
  chmod 600 "$1"
}
# ---------------------------------------------------------------- tool builds (tools.sh, node)
# These expect BIN, CUR and BUILD (see tools.sh) and the Go environment tools.sh sets up.

# tool_cache LABEL: the tool cache's layout (VIGIL_CACHE, BIN, CUR, BUILD), Go set up for
# reproducible local builds, and the cache's lock held on fd 9 for the rest of the script.
tool_cache() {
  VIGIL_CACHE=${VIGIL_CACHE:-$HOME/.cache/vigil}
  BIN=$VIGIL_CACHE/bin
  CUR=$BIN/current
  BUILD=$VIGIL_CACHE/build
  if [[ -x /usr/local/go/bin/go ]] && ! command -v go >/dev/null 2>&1; then
    PATH=/usr/local/go/bin:$PATH
  fi
  command -v go >/dev/null || { echo "$1: go not found" >&2; exit 1; }
  export CGO_ENABLED=0 GOTOOLCHAIN=local
  export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
  mkdir -p "$BIN" "$CUR" "$BUILD"
  exec 9>"$VIGIL_CACHE/.lock"
  flock 9
}

now() { date +%s; }
# fail NAME LOG: report a failed build with the tail of its log.
fail() {
  echo "$1: BUILD FAILED, last lines of $2:" >&2
  tail -n 30 "$2" >&2 || true
  exit 1
}
link() { ln -sfn "$2" "$CUR/$1"; }

# build NAME VERSION FUNC: run FUNC in a fresh $BUILD/NAME-VERSION, its output in build.log there.
build() {
  rm -rf "$BUILD/$1-$2"; mkdir -p "$BUILD/$1-$2"
  cd "$BUILD/$1-$2" || return
  "$3" >build.log 2>&1
}

# built NAME VERSION T0 STATUS: report a build started at T0 that ended with STATUS: its time,
# or the tail of its log and exit 1.
built() {
  [[ $4 -eq 0 ]] || fail "$1 $2" "$BUILD/$1-$2/build.log"
  echo "$1 $2: built in $(( $(now) - $3 ))s"
}

# install_bin FILE NAME VERSION: move FILE to $BIN/NAME-VERSION/NAME via a temporary name in
# that directory, so that an interrupted copy never looks cached.
install_bin() {
  mkdir -p "$BIN/$2-$3"
  mv "$1" "$BIN/$2-$3/$2.tmp"
  mv "$BIN/$2-$3/$2.tmp" "$BIN/$2-$3/$2"
}

# go_tool NAME VERSION: reuse $BIN/NAME-VERSION/NAME or build it now with NAME_build; then link it.
go_tool() {
  local name=$1 version=$2 t0 pid rc=0
  if [[ -x $BIN/$name-$version/$name ]]; then
    echo "$name $version: cached"
  else
    echo "$name $version: building..."
    t0=$(now)
    ( build "$name" "$version" "${name}_build" ) & pid=$!
    wait "$pid" || rc=$?
    built "$name" "$version" "$t0" "$rc"
  fi
  link "$name" "$BIN/$name-$version/$name"
}

# k8s_wrapper_module VERSION PACKAGE...: write, in the current directory, the Go module that
# builds Kubernetes commands at VERSION (`go install k8s.io/kubernetes/cmd/...@v` fails: the
# kubernetes go.mod points its staging modules at ./staging). It requires k8s.io/kubernetes and
# replaces each staging module (read from the downloaded go.mod) with its published
# v0.<minor>.<patch>; tools.go imports PACKAGEs so that `go mod tidy` keeps what they need.
k8s_wrapper_module() {
  local version=$1 gomod stage p; shift
  stage="v0.${version#v1.}"
  gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || { echo "no GoMod for k8s.io/kubernetes@$version"; return 1; }
  {
    echo "module vigil.local/k8s-tools"
    echo
    sed -n 's/^go \([0-9.]*\)$/go \1/p' "$gomod"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    # staging modules: those the kubernetes go.mod replaces with ./staging/...
    awk -v v="$stage" '$2 == "=>" && $3 ~ /^\.\/staging\// { print "\t" $1 " => " $1 " " v }' "$gomod"
    echo ")"
  } >go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for p in "$@"; do printf '\t_ "%s"\n' "$p"; done
    printf ')\n'
  } >tools.go
  go mod tidy
}

# k8s_ldflags VERSION: linker flags stamping VERSION, else /version reports v0.0.0 and version
# checks (kubelet vs apiserver skew, kubectl) break.
k8s_ldflags() {
  local version=$1 minor p ld="-s -w"
  minor=${version#v1.}; minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}

# apt_install LOG PACKAGE...: install Debian packages (root), output in LOG, without letting
# their maintainer scripts start services (a policy-rc.d that refuses, unless one exists).
apt_install() {
  local log=$1 added="" rc=0; shift
  [[ $(id -u) -eq 0 ]] || { echo "apt-get install $*: needs root" >&2; exit 1; }
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; added=1
  fi
  # (Lock::Timeout: another of the tier's scripts may be installing at the same moment.)
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      -o DPkg::Lock::Timeout=600 "$@"; } >"$log" 2>&1 || rc=$?
  [[ -z $added ]] || rm -f /usr/sbin/policy-rc.d
  [[ $rc -eq 0 ]] || fail "apt-get install $*" "$log"
}
