#!/usr/bin/env bash
# Builds gitops-verdicts (kstatus, gopher-lua and cel-go over recorded objects) into the cache, keyed by
# a hash of its sources, and prints the binary's path; like router/build.sh, a warm run is a no-op.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
BIN="${KUBETUNE_BIN:-$CACHE/bin}"
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}"
export GOCACHE="${GOCACHE:-$CACHE/gocache}"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS=-mod=readonly

cd "$HERE"
hash=$( (go version; find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
out="$BIN/kubetune-gitops-verdicts-$hash"
if [ ! -x "$out" ]; then
  mkdir -p "$BIN"
  echo "[gitops-verdicts] building $out" >&2
  go build -trimpath -ldflags "-s -w" -o "$out.tmp" .
  mv "$out.tmp" "$out"
  find "$BIN" -maxdepth 1 -name 'kubetune-gitops-verdicts-*' ! -name "$(basename "$out")" -mmin +60 -delete
fi
echo "$out"
