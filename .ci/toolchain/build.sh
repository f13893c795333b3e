#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries (and etcd, kwok, helm) from pinned
# Go modules into a cache outside the repository. No release downloads exist on
# these machines, so everything is compiled; a binary whose --version already
# matches the pin is not rebuilt, so a warm run takes seconds.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
# The real node (kubetune.devcluster.node): cluster DNS and the CRI client used for teardown.
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.4}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"
# NetworkPolicy enforcement on the real node (its policy controller only; the newest v2 the proxy serves).
KUBE_ROUTER_VERSION="${KUBE_ROUTER_VERSION:-v2.1.0}"
# Third-party CRDs the tests install (read from the module cache: no GitHub access here).
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.4.1}"
# InferencePool v1 only (config/crd/bases/inference.networking.k8s.io_inferencepools.yaml).
GATEWAY_API_INFERENCE_EXTENSION_VERSION="${GATEWAY_API_INFERENCE_EXTENSION_VERSION:-v1.6.0}"

CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
BIN="$CACHE/bin"
WORK="$CACHE/gowork"
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}"
export GOCACHE="${GOCACHE:-$CACHE/gocache}"
export GOFLAGS=-mod=mod
export CGO_ENABLED=0
export GOTOOLCHAIN=local
mkdir -p "$BIN" "$WORK"

log() { printf '[toolchain] %s\n' "$*" >&2; }

has_version() { # <binary> <expected substring> <version args...>
  local bin="$1" want="$2"; shift 2
  [ -x "$BIN/$bin" ] && "$BIN/$bin" "$@" 2>/dev/null | grep -q -- "$want"
}

build_kubernetes() {
  if has_version kube-apiserver "$KUBE_VERSION" --version &&
     has_version kube-controller-manager "$KUBE_VERSION" --version &&
     has_version kube-scheduler "$KUBE_VERSION" --version &&
     has_version kubectl "$KUBE_VERSION" version --client &&
     has_version kubelet "$KUBE_VERSION" --version &&
     has_version kube-proxy "$KUBE_VERSION" --version; then
    log "kubernetes $KUBE_VERSION: cached"; return
  fi
  local mod="$WORK/kubernetes-$KUBE_VERSION" minor="${KUBE_VERSION#v1.}"
  minor="${minor%%.*}"
  local staging="v0.${KUBE_VERSION#v1.}"
  mkdir -p "$mod"
  (
    cd "$mod"
    [ -f go.mod ] || go mod init kubetune.io/toolchain/kubernetes >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    # k/k requires every staging module at v0.0.0 with local replaces; point them at the published tags.
    grep -E '^\s*k8s.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
      go mod edit -replace "$m=$m@$staging"
    done
    go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
    cat > tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
EOF
    go mod tidy >/dev/null
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy $KUBE_VERSION"
    go build -trimpath -ldflags "$ldflags" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl \
      k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy
  )
}

build_etcd() {
  if has_version etcd "${ETCD_VERSION#v}" --version; then log "etcd $ETCD_VERSION: cached"; return; fi
  local mod="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    [ -f go.mod ] || go mod init kubetune.io/toolchain/etcd >/dev/null 2>&1
    cat > tools.go <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
    go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy >/dev/null
    log "building etcd $ETCD_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  )
}

go_install() { # <binary> <version> <package@version>
  local bin="$1" version="$2" pkg="$3"
  if has_version "$bin" "$version" version; then log "$bin $version: cached"; return; fi
  log "building $bin $version"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "$pkg"
}

want="${*:-kubernetes etcd kwok helm crds coredns crictl kube-router}"
for what in $want; do
  case "$what" in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    kwok)
      if has_version kwok "$KWOK_VERSION" --version && has_version kwokctl "$KWOK_VERSION" --version; then
        log "kwok $KWOK_VERSION: cached"
      else
        log "building kwok, kwokctl $KWOK_VERSION"
        GOBIN="$BIN" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
          "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
      fi ;;
    helm)
      if has_version helm "$HELM_VERSION" version --short; then log "helm $HELM_VERSION: cached"; else
        log "building helm $HELM_VERSION"
        GOBIN="$BIN" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
      fi ;;
    coredns)
      if has_version coredns "${COREDNS_VERSION#v}" -version; then log "coredns $COREDNS_VERSION: cached"; else
        log "building coredns $COREDNS_VERSION"
        GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
      fi ;;
    crictl)
      if has_version crictl "$CRICTL_VERSION" --version; then log "crictl $CRICTL_VERSION: cached"; else
        log "building crictl $CRICTL_VERSION"
        GOBIN="$BIN" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
          "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
      fi ;;
    kube-router)
      # It prints its version on stderr.
      if [ -x "$BIN/kube-router" ] && "$BIN/kube-router" --version 2>&1 | grep -q -- "version $KUBE_ROUTER_VERSION,"; then
        log "kube-router $KUBE_ROUTER_VERSION: cached"
      else
        log "building kube-router $KUBE_ROUTER_VERSION"
        GOBIN="$BIN" go install -trimpath \
          -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
          "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
      fi ;;
    crds)
      log "third-party CRD modules: prometheus-operator $PROMETHEUS_OPERATOR_VERSION, gateway-api $GATEWAY_API_VERSION," \
        "gateway-api-inference-extension $GATEWAY_API_INFERENCE_EXTENSION_VERSION"
      (cd "$WORK" && go mod download "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
        "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
        "sigs.k8s.io/gateway-api-inference-extension@$GATEWAY_API_INFERENCE_EXTENSION_VERSION") ;;
    *) log "unknown component $what"; exit 2 ;;
  esac
done
log "binaries in $BIN"
