#!/usr/bin/env bash
# Builds the router (static, CGO_ENABLED=0) into the cache, keyed by a hash of its sources, and prints the
# binary's path. A binary for the current sources is reused, so a warm run takes milliseconds; the Go
# module and build caches live under the cache too (as .ci/toolchain/build.sh's do).
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
hash=$( (go version; find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name '*.json' \) -not -path './testdata/*' | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
out="$BIN/kubetune-router-$hash"
if [ ! -x "$out" ]; then
  mkdir -p "$BIN"
  echo "[router] building $out" >&2
  go build -trimpath -ldflags "-s -w" -o "$out.tmp" .
  mv "$out.tmp" "$out"
  # Drop builds of other sources after an hour (a test run started before an edit may still use one).
  find "$BIN" -maxdepth 1 -name 'kubetune-router-*' ! -name "$(basename "$out")" -mmin +60 -delete
fi
ln -sfn "$(basename "$out")" "$BIN/kubetune-router"
echo "$out"
