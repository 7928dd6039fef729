#!/usr/bin/env bash
# plugins/krew-manifest.sh — print the Krew manifest of kubectl-vigil for a release.
#
# Usage: plugins/krew-manifest.sh TAG [DIR]
#   TAG  the release tag (v0.1.0); the archives' URIs point at its GitHub release assets.
#   DIR  holds kubectl-vigil-<os>-<arch>.tar.gz.sha256 (`sha256sum` output) for each platform;
#        without it the checksums are placeholders (64 zeros), as in the committed vigil.yaml.
# The release workflow (.github/workflows/release.yaml) writes plugins/vigil.yaml with it and
# attaches the result to the release; `kubectl krew install --manifest-url=<that asset>`.
set -euo pipefail

TAG=${1:?usage: plugins/krew-manifest.sh TAG [DIR]}
DIR=${2:-}
REPO=${VIGIL_GITHUB_REPOSITORY:-vigil-dev/vigil}
[[ $TAG =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "not a version tag: $TAG" >&2; exit 1; }

sha() {
  local f=$DIR/kubectl-vigil-$1-$2.tar.gz.sha256 sum
  if [[ -z $DIR ]]; then printf '%064d' 0; return; fi
  [[ -f $f ]] || { echo "missing $f" >&2; exit 1; }
  sum=$(cut -d' ' -f1 "$f")
  [[ $sum =~ ^[0-9a-f]{64}$ ]] || { echo "not a sha256 in $f: $sum" >&2; exit 1; }
  echo "$sum"
}

cat <<YAML
# The Krew manifest of kubectl-vigil, written by plugins/krew-manifest.sh (the release workflow
# fills in the version and the archives' sha256; the committed copy has placeholders).
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: vigil
spec:
  version: $TAG
  homepage: https://github.com/$REPO
  shortDescription: Day-2 operations on vigil's Redis/Valkey replication sets
  description: |
    Day-2 operations on the RedisReplications of the vigil operator: \`kubectl vigil status
    NAME\` summarises roles, replication offsets and lag, fencing, hibernation and the last
    failover; \`switchover NAME [--to POD]\` moves the master without losing acknowledged
    writes; \`fence | unfence NAME POD|--all\` takes instances out of service keeping their
    data; \`hibernate NAME on|off\` stops a set keeping its claims and master; \`restart NAME
    [POD]\` rolls the instances through the operator's rolling update, master last; each waits
    for its outcome. \`kubectl vigil report NAME\` writes a .tar.gz of the objects, Events and
    logs with Secrets redacted.
  platforms:
YAML
for platform in linux/amd64 linux/arm64 darwin/amd64 darwin/arm64; do
  os=${platform%/*} arch=${platform#*/}
  cat <<YAML
    - selector:
        matchLabels:
          os: $os
          arch: $arch
      uri: https://github.com/$REPO/releases/download/$TAG/kubectl-vigil-$os-$arch.tar.gz
      sha256: "$(sha "$os" "$arch")"
      bin: kubectl-vigil
      files:
        - from: kubectl-vigil
          to: .
YAML
done
