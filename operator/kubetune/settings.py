"""The operator's settings: parsed once, at start-up, from its command line and environment.

Everything configurable reaches the controller, the reconcilers and the kube client through one
`OperatorSettings` passed down from `kubetune operator`; no other operator module reads the
environment. The variable names are the ones the Helm chart, the dev cluster and the tests set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.builders.finetunejob import DEFAULT_TRAINER_IMAGE
from kubetune.builders.modeldeployment import DEFAULT_VLLM_IMAGE
from kubetune.builders.router import DEFAULT_ROUTER_IMAGE, DEFAULT_ROUTER_RESOURCES

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
DEFAULT_METRICS_PORT = 9090
SMOKE_URL_OVERRIDE_ENV = "KUBETUNE_SMOKE_URL_OVERRIDE"


@dataclass(frozen=True)
class KubeSettings:
    """Where the API server is: an explicit kubeconfig, else in-cluster, else $KUBECONFIG / ~/.kube."""

    kubeconfig: str | None = None
    service_host: str | None = None
    service_port: str = "443"
    default_kubeconfig: str | None = None


@dataclass(frozen=True)
class RouterDefaults:
    """The chart's router defaults; a spec's `routerReplicas` overrides `replicas`."""

    image: str = DEFAULT_ROUTER_IMAGE
    replicas: int | None = None
    resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_ROUTER_RESOURCES)
    monitor_labels: Mapping[str, str] = field(default_factory=dict)
    """The chart's `metrics.podMonitorLabels`, for the router's PodMonitor too."""


@dataclass(frozen=True)
class OperatorSettings:
    # How the operator runs (command line first, then the environment).
    namespaces: tuple[str, ...] = ()
    liveness: str = DEFAULT_LIVENESS
    metrics_port: int | None = None
    """None or 0: no metrics endpoint."""
    verbose: bool = False
    kube: KubeSettings = field(default_factory=KubeSettings)
    instance: str = "local"
    """`reportingInstance` of the Events the operator posts (the pod's hostname)."""
    resync_seconds: float = 30.0
    worker_limit: int = 200
    # What it renders.
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    vllm_image: str = DEFAULT_VLLM_IMAGE
    router: RouterDefaults = field(default_factory=RouterDefaults)
    image_pull_secrets: tuple[str, ...] = ()
    """Secrets every pod the operator creates pulls with (the chart's `imagePullSecrets`)."""
    prometheus_url: str | None = None
    monitor_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels of every PodMonitor the operator creates: what a Prometheus' podMonitorSelector matches
    (kube-prometheus-stack selects `release: <its release name>`)."""
    prometheus_urls: tuple[str, ...] = ()
    """Prometheus URLs a spec's `analysis.prometheusUrl` may name (the chart's `analysis.prometheusUrls`)."""
    # How often it looks again.
    crd_cache_seconds: float = 60.0
    smoke_wait_seconds: float = 5.0
    smoke_timeout_seconds: float = 300.0
    network_policies: bool = True
    """NetworkPolicies around vLLM pods and training gangs (the chart's `workloadNetworkPolicies`)."""
    operator_namespace: str | None = None
    """Where the operator pod runs (the chart's release namespace): it may reach vLLM for smoke tests."""
    monitoring_namespace: str | None = "monitoring"
    """Where Prometheus runs: it may scrape vLLM pods."""
    allow_url_overrides: bool = False
    """Honour the smoke-test / synthetic-traffic URL annotations (tests and dev clusters only)."""
    router_confirm_seconds: float = 120.0
    """How long pods losing weight wait for every router pod to serve the new split before they scale
    down without the routers that do not answer (the kubelet updates a mounted ConfigMap within about
    a minute; an operator outside the pod network cannot read the routers back at all)."""

    @property
    def prometheus_allowlist(self) -> tuple[str, ...] | None:
        """What canary analysis may query: the allowlist and the operator's own Prometheus URL.

        None (any URL) only where URL overrides are allowed (tests and dev clusters) and no list is set.
        """
        allowed = self.prometheus_urls + ((self.prometheus_url,) if self.prometheus_url else ())
        if not allowed and self.allow_url_overrides:
            return None
        return allowed

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        namespaces: tuple[str, ...] = (),
        liveness: str | None = None,
        metrics_port: int | None = None,
        verbose: bool = False,
    ) -> OperatorSettings:
        """Settings from `environ` (the process environment by default) and the command line's values."""
        env = os.environ if environ is None else environ
        port_text = env.get("KUBETUNE_METRICS_PORT", str(DEFAULT_METRICS_PORT))
        resources = env.get("KUBETUNE_ROUTER_RESOURCES")
        replicas = env.get("KUBETUNE_ROUTER_REPLICAS")
        monitor_labels = parse_labels(env.get("KUBETUNE_MONITOR_LABELS", ""))
        return cls(
            namespaces=namespaces,
            liveness=liveness or env.get("KUBETUNE_LIVENESS") or DEFAULT_LIVENESS,
            metrics_port=metrics_port if metrics_port is not None else int(port_text) if port_text else None,
            verbose=verbose,
            kube=KubeSettings(
                kubeconfig=env.get("KUBETUNE_KUBECONFIG"),
                service_host=env.get("KUBERNETES_SERVICE_HOST"),
                service_port=env.get("KUBERNETES_SERVICE_PORT", "443"),
                default_kubeconfig=env.get("KUBECONFIG") or None,  # several paths: merged like kubectl
            ),
            instance=env.get("HOSTNAME", "local"),
            resync_seconds=float(env.get("KUBETUNE_RESYNC_SECONDS", "30")),
            worker_limit=int(env.get("KUBETUNE_WORKER_LIMIT", "200")),
            trainer_image=env.get("KUBETUNE_TRAINER_IMAGE") or DEFAULT_TRAINER_IMAGE,
            vllm_image=env.get("KUBETUNE_VLLM_IMAGE") or DEFAULT_VLLM_IMAGE,
            router=RouterDefaults(
                image=env.get("KUBETUNE_ROUTER_IMAGE") or DEFAULT_ROUTER_IMAGE,
                replicas=int(replicas) if replicas else None,
                resources=json.loads(resources) if resources else DEFAULT_ROUTER_RESOURCES,
                monitor_labels=monitor_labels,
            ),
            monitor_labels=monitor_labels,
            prometheus_url=env.get("KUBETUNE_PROMETHEUS_URL") or None,
            prometheus_urls=parse_names(env.get("KUBETUNE_PROMETHEUS_URLS", ""), "KUBETUNE_PROMETHEUS_URLS"),
            image_pull_secrets=parse_pull_secrets(env.get("KUBETUNE_IMAGE_PULL_SECRETS", "")),
            crd_cache_seconds=float(env.get("KUBETUNE_CRD_CACHE_SECONDS", "60")),
            smoke_wait_seconds=float(env.get("KUBETUNE_SMOKE_WAIT_SECONDS", "5")),
            smoke_timeout_seconds=float(env.get("KUBETUNE_SMOKE_TIMEOUT_SECONDS", "300")),
            allow_url_overrides=env.get(SMOKE_URL_OVERRIDE_ENV) == "allow",
            network_policies=env.get("KUBETUNE_NETWORK_POLICIES", "true").lower() != "false",
            operator_namespace=env.get("KUBETUNE_OPERATOR_NAMESPACE") or None,
            monitoring_namespace=env.get("KUBETUNE_MONITORING_NAMESPACE", "monitoring") or None,
            router_confirm_seconds=float(env.get("KUBETUNE_ROUTER_CONFIRM_SECONDS", "120")),
        )


def parse_pull_secrets(text: str) -> tuple[str, ...]:
    """The chart's JSON list of Secret names (a comma-separated list is accepted too)."""
    return parse_names(text, "KUBETUNE_IMAGE_PULL_SECRETS")


def parse_names(text: str, variable: str) -> tuple[str, ...]:
    """A chart value passed as a JSON list of strings (a comma-separated list is accepted too)."""
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{variable} must be a JSON list of strings, not {text!r}")
        return tuple(n for n in names if n)
    return tuple(n.strip() for n in text.split(",") if n.strip())


def parse_labels(text: str) -> dict[str, str]:
    """The chart's JSON object of labels (KUBETUNE_MONITOR_LABELS)."""
    if not text.strip():
        return {}
    labels = json.loads(text)
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ValueError(f"KUBETUNE_MONITOR_LABELS must be a JSON object of strings, not {text!r}")
    return labels
