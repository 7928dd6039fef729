#!/usr/bin/env bash
# install.sh — the Java and Node Sentinel clients of the e2e client matrix, from Maven Central
# and npm at the versions pinned in tests/clients/java-failover/pom.xml (Jedis, Lettuce) and
# tests/clients/node-failover/package-lock.json (ioredis), and a Spring Boot application with
# Spring Data Redis (tests/clients/spring-failover/pom.xml). Called by tests/controlplane/tools.sh,
# which holds the cache's lock; like it, idempotent and quiet apart from one line per client.
#
# Built outside the repo, each keyed by a hash of its sources (so editing a client or bumping a
# pin rebuilds it): $VIGIL_CACHE/bin/<client>-<hash>/ with a `complete` marker written last, and
# $VIGIL_CACHE/bin/current/<client> a wrapper that runs it. Maven's repository and npm's cache
# live in $VIGIL_CACHE too (m2/, npm/); the e2e tests then run offline.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VIGIL_CACHE=${VIGIL_CACHE:-$HOME/.cache/vigil}
BIN=$VIGIL_CACHE/bin
CUR=$BIN/current
BUILD=$VIGIL_CACHE/build
mkdir -p "$BIN" "$CUR" "$BUILD"

now() { date +%s; }
fail() {
  echo "$1: BUILD FAILED, last lines of $2:" >&2
  tail -n 30 "$2" >&2 || true
  exit 1
}

# need COMMAND PACKAGE...: install the Debian packages when COMMAND is missing.
need() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || { echo "install.sh: $cmd is missing and apt-get needs root" >&2; exit 1; }
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; } \
    >"$BUILD/clients-apt.log" 2>&1 || fail "$*" "$BUILD/clients-apt.log"
}

# sources_hash DIR FILE...: a hash of the named files of DIR (names included).
sources_hash() {
  local dir=$1; shift
  (cd "$dir" && for f in "$@"; do echo "$f"; cat "$f"; done) | sha256sum | cut -c1-16
}

# client NAME LABEL HASH BUILD_FUNC: reuse $BIN/NAME-HASH or build it with BUILD_FUNC DEST (run in
# a fresh $BUILD/NAME-HASH holding a copy of the sources), then link the wrapper.
client() {
  local name=$1 label=$2 hash=$3 func=$4 dest=$BIN/$1-$3 t0
  if [[ -f $dest/complete ]]; then
    echo "$name $hash ($label): cached"
  else
    echo "$name $hash ($label): building..."
    t0=$(now)
    rm -rf "$dest" "$BUILD/$name-$hash"
    mkdir -p "$dest" "$BUILD/$name-$hash"
    cp -r "$ROOT/tests/clients/$name/." "$BUILD/$name-$hash/"
    (cd "$BUILD/$name-$hash" && "$func" "$dest" >build.log 2>&1) || fail "$name" "$BUILD/$name-$hash/build.log"
    touch "$dest/complete"
    echo "$name $hash ($label): built in $(( $(now) - t0 ))s"
  fi
  ln -sfn "$dest/$name" "$CUR/$name"
}

# ---------------------------------------------------------------- Jedis, Lettuce
java_build() {
  local dest=$1
  mvn -B -q -Dmaven.repo.local="$VIGIL_CACHE/m2" package
  cp target/java-failover-0.jar "$dest/"
  cp -r target/lib "$dest/lib"
  # Small JVMs: six clients and a cluster share two cores in the client matrix.
  cat >"$dest/java-failover" <<WRAP
#!/bin/sh
exec java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k -Xmx96m \\
  -cp "$dest/java-failover-0.jar:$dest/lib/*" dev.vigil.failover.Failover "\$@"
WRAP
  chmod +x "$dest/java-failover"
}
need java default-jdk-headless
need mvn maven
java_src=$ROOT/tests/clients/java-failover
mapfile -t java_sources < <(cd "$java_src" && find src -type f | sort)
java_files=(pom.xml "${java_sources[@]}")
client java-failover "Jedis, Lettuce" "$(sources_hash "$java_src" "${java_files[@]}")" java_build

# ---------------------------------------------------------------- Spring Data Redis
spring_build() {
  local dest=$1
  mvn -B -q -Dmaven.repo.local="$VIGIL_CACHE/m2" package
  cp target/spring-failover-0.jar "$dest/"
  cp -r target/lib "$dest/lib"
  cat >"$dest/spring-failover" <<WRAP
#!/bin/sh
exec java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k -Xmx128m \\
  -cp "$dest/spring-failover-0.jar:$dest/lib/*" dev.vigil.failover.SpringFailover "\$@"
WRAP
  chmod +x "$dest/spring-failover"
}
spring_src=$ROOT/tests/clients/spring-failover
mapfile -t spring_sources < <(cd "$spring_src" && find src -type f | sort)
client spring-failover "Spring Data Redis" \
  "$(sources_hash "$spring_src" pom.xml "${spring_sources[@]}")" spring_build

# ---------------------------------------------------------------- ioredis
node_build() {
  local dest=$1
  npm ci --omit=dev --no-audit --no-fund --cache "$VIGIL_CACHE/npm"
  cp -r node_modules failover.js package.json "$dest/"
  cat >"$dest/node-failover" <<WRAP
#!/bin/sh
exec node "$dest/failover.js" "\$@"
WRAP
  chmod +x "$dest/node-failover"
}
need node nodejs
need npm npm
client node-failover "ioredis" \
  "$(sources_hash "$ROOT/tests/clients/node-failover" package.json package-lock.json failover.js)" node_build
