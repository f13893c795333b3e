# kubetune: every target uses .venv/ (created on demand) and a cache outside the repo.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export KUBETUNE_CACHE ?= $(HOME)/.cache/kubetune
export KUBETUNE_BIN ?= $(KUBETUNE_CACHE)/bin
export PIP_CACHE_DIR ?= $(HOME)/.cache/pip
EXTRAS := test,trainer
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
# Go builds share the module and build caches with .ci/toolchain/build.sh; never a toolchain download.
GOENV := GOMODCACHE=$(KUBETUNE_CACHE)/gomod GOCACHE=$(KUBETUNE_CACHE)/gocache GOTOOLCHAIN=local GOFLAGS=-mod=readonly

.PHONY: help
help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# torch first: DeepSpeed's sdist imports it at build time.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*; touch $@

.PHONY: install
install: $(STAMP) ## create .venv with the package (editable) and its test and trainer extras

.PHONY: cluster-binaries
cluster-binaries: ## build kube-apiserver, controller-manager, scheduler, etcd, kwok, helm, the node's binaries from pinned Go modules (cached)
	.ci/toolchain/build.sh

.PHONY: router
router: ## build the router (Go, static) into the cache; a no-op when the binary for these sources exists
	router/build.sh >/dev/null

.PHONY: gitops-verdicts
gitops-verdicts: ## build the GitOps verdicts helper (kstatus, gopher-lua, cel-go) into the cache; a no-op when built
	tests/gitops/verdicts/build.sh >/dev/null

.PHONY: vllm-env
vllm-env: ## separate CPU vLLM virtualenv (outside the repo, cached) for the real-server tests
	.ci/vllm-env.sh

.PHONY: system-packages
# The real node (kubetune.devcluster.node) runs pods with containerd + runc on a CNI bridge, and
# kube-proxy programs iptables (kube-router's NetworkPolicy controller also ipsets); Prometheus scrapes it
# in the e2e tests and `make dev`.
NODE_PACKAGES := prometheus containerd runc containernetworking-plugins iptables ipset conntrack curl
system-packages: ## apt packages the tests start for real (Prometheus, containerd, runc, CNI plugins, iptables, ipset)
	@dpkg-query -W $(NODE_PACKAGES) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get -o DPkg::Lock::Timeout=900 install -y -qq $(NODE_PACKAGES) >/dev/null)

.PHONY: image-tools
image-tools: ## apt packages `make images` uses: buildah, skopeo, mmdebstrap, containerd (ctr) + runc
	@for tool in buildah skopeo mmdebstrap ctr runc; do command -v $$tool >/dev/null || missing=1; done; \
	  test -z "$$missing" || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get -o DPkg::Lock::Timeout=900 install -y -qq buildah skopeo mmdebstrap containerd runc uidmap >/dev/null)

# IMAGES: a subset (e.g. IMAGES="operator router"); PUSH=1 REGISTRY=registry.example.com/team [TAG=0.1.0]
# also pushes them to $(REGISTRY)/kubetune/<name>:<TAG> (credentials: REGISTRY_AUTH_FILE or buildah login).
IMAGES ?=
REGISTRY ?=
PUSH ?=
TAG ?=
.PHONY: images
images: image-tools ## build the operator, trainer, router and CPU vLLM images with buildah, no Docker or registry (cached by content hash)
	PYTHONPATH=operator $(PYTHON) -m kubetune.devcluster.images build $(IMAGES) \
	  $(if $(filter 1,$(PUSH)),--push $(or $(REGISTRY),$(error PUSH=1 needs REGISTRY=...)) $(if $(TAG),--tag $(TAG)))

.PHONY: manifests
manifests: install ## regenerate crds/ (and the chart's copy) from the typed API models
	$(PY) -m kubetune.crdgen crds charts/kubetune/crds
	$(PY) -m kubetune.chartgen
	$(PY) -m kubetune.routerschema router/internal/config/routerconfig.schema.json

.PHONY: lint
lint: install ## ruff + mypy, gofmt + go vet
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy
	@unformatted=$$(gofmt -l router tests/gitops); test -z "$$unformatted" || { echo "gofmt needed: $$unformatted"; exit 1; }
	cd router && $(GOENV) go vet ./...
	cd tests/gitops/verdicts && $(GOENV) go vet ./...

.PHONY: prerequisites
prerequisites: ## everything the tests need, in parallel (Go builds are CPU-bound, pip, apt and images mostly network and disk)
	$(MAKE) --no-print-directory -j4 install cluster-binaries system-packages vllm-env router gitops-verdicts images

.PHONY: test
test: prerequisites ## everything CI runs: lint, unit, real-apiserver, training, serving, chart tests
	$(MAKE) --no-print-directory lint
	cd router && $(GOENV) go test ./...
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: run
run: install ## run the operator against the current kubeconfig
	$(VENV)/bin/kubetune operator

.PHONY: dev
dev: install cluster-binaries system-packages images ## the quickstart for real: local node, images, helm install, train, serve, canary
	$(PY) -m kubetune.dev up

.PHONY: dev-down
dev-down: ## stop the local control plane started by `make dev`
	$(PY) -m kubetune.dev down

.PHONY: bench
bench: install cluster-binaries router system-packages images vllm-env ## benchmarks that print figures (not part of `make test`)
	$(PY) bench/trainer_cpu.py
	# A new adapter revision loaded into a running vLLM (CPU build) vs. a restart with it static (~5 min).
	$(PY) bench/lora_runtime.py
	$(PY) bench/trainer_gpu.py
	$(PY) bench/router.py
	$(PY) bench/operator_scale.py
	$(PY) bench/chaos.py
	# Serving faults on the real node (root; `make dev`'s stack, torn down at the end).
	$(PY) bench/serving_chaos.py

.PHONY: clean
clean: ## remove the virtualenv and caches inside the repo (the Go/pip caches stay)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
