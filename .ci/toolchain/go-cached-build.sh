#!/usr/bin/env bash
# go-cached-build.sh NAME DIR PATTERN...: builds the Go main package in DIR (static, CGO_ENABLED=0) into
# the cache as kubetune-NAME-<hash>, keyed by the Go version and the files matching PATTERN (testdata
# excluded), links kubetune-NAME to it and prints its path. A binary for the current sources is reused,
# so a warm run takes milliseconds; the Go module and build caches are shared with build.sh's.
set -euo pipefail

name="$1" dir="$2"
shift 2
CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
BIN="${KUBETUNE_BIN:-$CACHE/bin}"
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}"
export GOCACHE="${GOCACHE:-$CACHE/gocache}"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS=-mod=readonly

names=()
for pattern in "$@"; do
  names+=(${names:+-o} -name "$pattern")
done
cd "$dir"
hash=$( (go version; find . -type f \( "${names[@]}" \) -not -path './testdata/*' | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
out="$BIN/kubetune-$name-$hash"
if [ ! -x "$out" ]; then
  mkdir -p "$BIN"
  echo "[$name] building $out" >&2
  go build -trimpath -ldflags "-s -w" -o "$out.tmp" .
  mv "$out.tmp" "$out"
  # Drop builds of other sources after an hour (a test run started before an edit may still use one).
  find "$BIN" -maxdepth 1 -name "kubetune-$name-*" ! -name "$(basename "$out")" -mmin +60 -delete
fi
ln -sfn "$(basename "$out")" "$BIN/kubetune-$name"
echo "$out"
