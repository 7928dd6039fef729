#!/usr/bin/env bash
# tests/node/images.sh BINARY LIST — the images the real node runs, built with Debian's dockerd
# (BuildKit) and saved as `docker save` archives for tests/node/up.sh to import into containerd:
#
#   debian:bookworm-slim                         the base: debootstrap --variant=minbase bookworm
#                                                from Debian's mirror, imported (no registry here)
#   ghcr.io/vigil-dev/vigil-server:<appVersion>  images/server/Dockerfile (Valkey 8, backports)
#   ghcr.io/vigil-dev/vigil-server:<appVersion>-redis   the same file, SERVER=redis (Redis 7)
#   ghcr.io/vigil-dev/vigil-operator:<appVersion>       images/operator/Dockerfile
#   localhost/kubernetes-pause, localhost/coredns, localhost/local-path-provisioner
#                                                tests/node/images/*.Dockerfile, on the binaries
#                                                tests/node/tools.sh built
#
# The project's Dockerfiles are the files users build; only their `binary` stage is replaced
# (VIGIL_BINARY=an image of BINARY, the vigil binary cargo built on the host), as compiling Rust
# again inside the build would double a cold run. Each image is built, checked (it must start
# the programs it claims) and saved only when its key changes: a hash of its Dockerfile, build
# arguments, context files and base. A warm run with nothing changed starts no dockerd at all.
#
# Writes LIST: one line per image, "ARCHIVE ID NAME[,NAME...]".
# dockerd runs build-only while needed (DESIGN §11): its own data root, exec root and socket
# under $VIGIL_CACHE/docker, no bridge, no iptables, no forwarding, so it changes no host
# networking; builds use --network host so apt inside them reaches Debian's mirror.
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 BINARY LIST" >&2
  exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../controlplane/lib.sh
. "$HERE/../controlplane/lib.sh"
# shellcheck source-path=SCRIPTDIR source=node.sh
. "$HERE/node.sh"
BINARY=$(realpath "$1")
LIST=$2
IMAGES=$VIGIL_CACHE/images
DOCKER_DIR=$VIGIL_CACHE/docker
SOCK=$DOCKER_DIR/docker.sock
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/vigil/Chart.yaml")
[[ -n $VERSION ]] || { echo "images: no appVersion in charts/vigil/Chart.yaml" >&2; exit 1; }
[[ -x $BINARY ]] || { echo "images: $BINARY is not an executable" >&2; exit 1; }
# An image holding BINARY at /out/vigil, for the project Dockerfiles' VIGIL_BINARY stage.
BINARY_IMAGE=vigil-host-build:$(sha256sum <"$BINARY" | cut -c1-16)
# Debian's client: it has BuildKit (the newer client elsewhere on PATH has no buildx).
DOCKER=(/usr/bin/docker --host "unix://$SOCK")
export DOCKER_BUILDKIT=1
mkdir -p "$IMAGES" "$DOCKER_DIR"
exec 7>"$IMAGES/.lock"
flock 7

# ---------------------------------------------------------------- dockerd (only when needed)
DOCKERD_PID=
dockerd_up() {
  [[ -z $DOCKERD_PID ]] || return 0
  local t0 deadline
  t0=$(now)
  [[ -f $DOCKER_DIR/daemon.json ]] || echo '{}' >"$DOCKER_DIR/daemon.json"
  setsid /usr/sbin/dockerd --config-file "$DOCKER_DIR/daemon.json" \
    --data-root "$DOCKER_DIR/root" --exec-root "$DOCKER_DIR/exec" \
    --pidfile "$DOCKER_DIR/dockerd.pid" --host "unix://$SOCK" \
    --iptables=false --ip-masq=false --ip-forward=false --bridge=none \
    --storage-driver=overlay2 --exec-opt native.cgroupdriver=cgroupfs --log-level=warn \
    </dev/null >"$DOCKER_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  deadline=$(( $(now) + 60 ))
  until "${DOCKER[@]}" version >/dev/null 2>&1; do
    running "$DOCKERD_PID" || { tail -n 20 "$DOCKER_DIR/dockerd.log" >&2; echo "images: dockerd exited" >&2; exit 1; }
    (( $(now) < deadline )) || { tail -n 20 "$DOCKER_DIR/dockerd.log" >&2; echo "images: dockerd not up after 60s" >&2; exit 1; }
    sleep 0.2
  done
  echo "images: build-only dockerd up in $(( $(now) - t0 ))s"
}
dockerd_down() {
  if [[ -n $DOCKERD_PID ]]; then stop_pid dockerd "$DOCKERD_PID" 30 >/dev/null; DOCKERD_PID=; fi
}
trap dockerd_down EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the base
BASE_NAME=$BASE_IMAGE
BASE_TAR=$IMAGES/debian-bookworm-minbase.tar
MIRROR=http://deb.debian.org/debian
if [[ ! -s $BASE_TAR ]]; then
  echo "images: $BASE_NAME: debootstrap --variant=minbase bookworm $MIRROR ..."
  t0=$(now)
  root=$IMAGES/.rootfs
  rm -rf "$root"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$IMAGES/debootstrap.log" 2>&1 \
    || fail "debootstrap" "$IMAGES/debootstrap.log"
  # The suites Debian's own images list, so apt in a build gets the updated packages too.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" --numeric-owner -cf "$BASE_TAR.tmp" .
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$root"
  echo "images: $BASE_NAME: made in $(( $(now) - t0 ))s"
fi
BASE_KEY=$(sha256sum <"$BASE_TAR" | cut -c1-16)
BASE_LOADED=
# base_up: dockerd runs and holds the base and the binary image.
base_up() {
  dockerd_up
  [[ -z $BASE_LOADED ]] || return 0
  # Imported again only if the daemon's copy is not this tarball's (the label says which).
  if [[ $("${DOCKER[@]}" image inspect -f '{{index .Config.Labels "vigil.base-key"}}' "$BASE_NAME" 2>/dev/null) != "$BASE_KEY" ]]; then
    "${DOCKER[@]}" import --change "LABEL vigil.base-key=$BASE_KEY" --change 'CMD ["bash"]' \
      "$BASE_TAR" "$BASE_NAME" >/dev/null
  fi
  if ! "${DOCKER[@]}" image inspect "$BINARY_IMAGE" >/dev/null 2>&1; then
    local dir=$IMAGES/.binary
    rm -rf "$dir"; mkdir -p "$dir/out"
    cp "$BINARY" "$dir/out/vigil"
    tar -C "$dir" -c out | "${DOCKER[@]}" import - "$BINARY_IMAGE" >/dev/null
    rm -rf "$dir"
  fi
  BASE_LOADED=1
}

# ---------------------------------------------------------------- the images
: >"$LIST.tmp"
# The base runs on the node too (the provisioner's helper pods).
base_archive=$IMAGES/${BASE_NAME//[\/:]/_}-$BASE_KEY.tar
if [[ ! -s $base_archive || ! -s $base_archive.id ]]; then
  base_up
  "${DOCKER[@]}" image inspect -f '{{.Id}}' "$BASE_NAME" >"$base_archive.id"
  "${DOCKER[@]}" save "$BASE_NAME" -o "$base_archive.tmp"
  mv "$base_archive.tmp" "$base_archive"
fi
echo "$base_archive $(<"$base_archive.id") $BASE_NAME" >>"$LIST.tmp"

# image KEY_PARTS NAMES DOCKERFILE CONTEXT CHECK [BUILD ARGS...]: build (unless cached) the image
# NAMES (comma-separated; the first is the build's tag) from DOCKERFILE in CONTEXT, check it
# with CHECK (commands run in it, separated by |; "" for none), save it, and add it to the list. KEY_PARTS are
# the files whose content, with the args, makes the cache key.
image() {
  local parts=$1 names=$2 dockerfile=$3 context=$4 check=$5; shift 5
  local key archive t0 first=${names%%,*} n label cmd tags checks c
  label=${first//[\/:]/_}
  # shellcheck disable=SC2086 # KEY_PARTS is a list of files
  key=$( { cat $parts "$dockerfile"; printf '%s\n' "$BASE_KEY" "$names" "$@"; } | sha256sum | cut -c1-16)
  archive=$IMAGES/$label-$key.tar
  if [[ -s $archive && -s $archive.id ]]; then
    echo "images: $first: cached ($(cut -c8-19 <"$archive.id"))"
  else
    t0=$(now)
    base_up
    local args=() log=$IMAGES/$label.build.log
    for n in "$@"; do args+=(--build-arg "$n"); done
    if ! "${DOCKER[@]}" build --network host --iidfile "$archive.id.tmp" -f "$dockerfile" \
         -t "$first" "${args[@]}" "$context" >"$log" 2>&1; then
      fail "docker build -f $dockerfile ($first)" "$log"
    fi
    IFS='|' read -ra checks <<<"$check"
    for c in "${checks[@]}"; do
      read -ra cmd <<<"$c"
      if ! "${DOCKER[@]}" run --rm --network none --entrypoint "${cmd[0]}" "$first" "${cmd[@]:1}" \
           >>"$log" 2>&1; then
        fail "$first: \`$c\` in the built image" "$log"
      fi
    done
    IFS=, read -ra tags <<<"$names"
    for n in "${tags[@]:1}"; do "${DOCKER[@]}" tag "$first" "$n"; done
    "${DOCKER[@]}" save "${tags[@]}" -o "$archive.tmp"
    mv "$archive.tmp" "$archive"
    mv "$archive.id.tmp" "$archive.id"
    # Older archives of this image are superseded.
    find "$IMAGES" -maxdepth 1 -name "$label-*.tar*" ! -name "$label-$key.tar*" -delete
    echo "images: $first: built in $(( $(now) - t0 ))s ($(cut -c8-19 <"$archive.id"))"
  fi
  echo "$archive $(<"$archive.id") $names" >>"$LIST.tmp"
}

# Contexts for the node's own images: just the binary each Dockerfile copies.
ctx() {
  local dir=$IMAGES/.ctx-$1
  rm -rf "$dir"; mkdir -p "$dir"
  cp "$CUR/$1" "$dir/$1"
  echo "$dir"
}
image "$CUR/pause" "$PAUSE_IMAGE" "$HERE/images/pause.Dockerfile" \
  "$(ctx pause)" ""
image "$CUR/coredns" "$COREDNS_IMAGE" "$HERE/images/coredns.Dockerfile" \
  "$(ctx coredns)" "/coredns -version"
image "$CUR/local-path-provisioner" "$LOCAL_PATH_IMAGE" \
  "$HERE/images/local-path-provisioner.Dockerfile" "$(ctx local-path-provisioner)" \
  "/usr/bin/local-path-provisioner --version"
rm -rf "$IMAGES"/.ctx-*

# The project's images. Scenarios that roll to "another" server image name it by tag: here it is
# this build too.
SERVER=ghcr.io/vigil-dev/vigil-server:$VERSION
mapfile -t OTHER_TAGS < <(grep -ho "${SERVER%:*}:[A-Za-z0-9._-]*" "$ROOT"/tests/e2e/*.rs | sort -u \
  | grep -vxF -e "$SERVER" -e "$SERVER-redis" || true)
server_names=$SERVER
for t in "${OTHER_TAGS[@]}"; do server_names+=",$t"; done
image "$BINARY $ROOT/.dockerignore" "$server_names" "$ROOT/images/server/Dockerfile" "$ROOT" \
  "/usr/local/bin/vigil --version|valkey-server --version" "VIGIL_BINARY=$BINARY_IMAGE"
image "$BINARY $ROOT/.dockerignore" "$SERVER-redis" "$ROOT/images/server/Dockerfile" "$ROOT" \
  "/usr/local/bin/vigil --version|redis-server --version" "VIGIL_BINARY=$BINARY_IMAGE" SERVER=redis
image "$BINARY $ROOT/.dockerignore" "ghcr.io/vigil-dev/vigil-operator:$VERSION" \
  "$ROOT/images/operator/Dockerfile" "$ROOT" "/usr/local/bin/vigil --version" \
  "VIGIL_BINARY=$BINARY_IMAGE"
mv "$LIST.tmp" "$LIST"
