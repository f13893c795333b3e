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
cluster-binaries: ## build kube-apiserver, controller-manager, scheduler, etcd, kwok, helm from pinned Go modules (cached)
	.ci/toolchain/build.sh

.PHONY: router
router: ## build the router (Go, static) into the cache; a no-op when the binary for these sources exists
	router/build.sh >/dev/null

.PHONY: vllm-env
vllm-env: ## separate CPU vLLM virtualenv (outside the repo, cached) for the real-server tests
	.ci/vllm-env.sh

.PHONY: system-packages
system-packages: ## apt packages the tests start for real (Prometheus)
	@command -v prometheus >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null)

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
	@unformatted=$$(gofmt -l router); test -z "$$unformatted" || { echo "gofmt needed: $$unformatted"; exit 1; }
	cd router && $(GOENV) go vet ./...

.PHONY: prerequisites
prerequisites: ## everything the tests need, in parallel (Go builds are CPU-bound, pip and apt network-bound)
	$(MAKE) --no-print-directory -j4 install cluster-binaries system-packages vllm-env router

.PHONY: test
test: prerequisites ## everything CI runs: lint, unit, real-apiserver, training, serving, chart tests
	$(MAKE) --no-print-directory lint
	cd router && $(GOENV) go test ./...
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: run
run: install ## run the operator against the current kubeconfig
	$(VENV)/bin/kubetune operator

.PHONY: dev
dev: install cluster-binaries ## local control plane + CRDs + operator + examples, then show them
	$(PY) -m kubetune.dev up

.PHONY: dev-down
dev-down: ## stop the local control plane started by `make dev`
	$(PY) -m kubetune.dev down

.PHONY: bench
bench: install cluster-binaries router ## benchmarks that print figures (not part of `make test`)
	$(PY) bench/trainer_cpu.py
	$(PY) bench/router.py
	$(PY) bench/operator_scale.py
	$(PY) bench/chaos.py

.PHONY: clean
clean: ## remove the virtualenv and caches inside the repo (the Go/pip caches stay)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
