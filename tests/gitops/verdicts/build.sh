#!/usr/bin/env bash
# Builds gitops-verdicts (kstatus, gopher-lua and cel-go over recorded objects) into the cache, keyed by
# a hash of its sources, and prints the binary's path; a warm run is a no-op.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$HERE/../../../.ci/toolchain/go-cached-build.sh" gitops-verdicts "$HERE" '*.go' go.mod go.sum
