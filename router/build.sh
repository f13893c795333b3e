#!/usr/bin/env bash
# Builds the router into the cache, keyed by a hash of its sources (its JSON schema included), and prints
# the binary's path; a warm run is a no-op.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$HERE/../.ci/toolchain/go-cached-build.sh" router "$HERE" '*.go' go.mod go.sum '*.json'
