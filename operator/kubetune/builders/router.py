"""The kubetune router in front of a ModelDeployment: its config (ConfigMap), Deployment, Service,
PodDisruptionBudget and PodMonitor. Pure: the object as read from the API and settings in, manifests out.

The override and synthetic headers count only on requests carrying the operator's token (`TOKEN_HEADER`),
read from a Secret the reconciler creates once (`build_router_token_secret`; the random value is chosen
by the caller, so these builders stay pure) and mounted into the pods.

The config is the shared `RouterConfig` model, so the operator cannot write a file the router rejects.
The router polls the mounted file: a new config reaches running pods when the kubelet refreshes the
ConfigMap volume (about a minute), without a restart and without dropping in-flight streams, which is
why the config's content is deliberately not part of the pod template.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kubetune.api.common import GROUP
from kubetune.api.modeldeployment import ModelDeploymentSpec, Variant
from kubetune.api.routerconfig import CONFIG_FILE_NAME, RouterConfig, RouterVariant, parse_router_config
from kubetune.builders.common import (
    LABEL_DEPLOYMENT,
    LABEL_ROLE,
    RESTRICTED_CONTAINER_SECURITY,
    Manifest,
    child_name,
    metadata,
    standard_labels,
    with_image_pull_secrets,
)
from kubetune.builders.modeldeployment import variant_resource_name
from kubetune.builders.vllm import VLLM_PORT

ROLE_ROUTER = "router"
ROUTER_PORT = 8080
PORT_NAME = "http"
CONFIG_DIR = "/etc/kubetune/router"
CONFIG_VOLUME = "config"
# Names and paths, not secrets (S105 sees "token" in them).
ROLE_ROUTER_TOKEN = "router-token"  # noqa: S105
TOKEN_DIR = "/etc/kubetune/router-token"  # noqa: S105
TOKEN_VOLUME = "token"  # noqa: S105
TOKEN_KEY = "token"  # noqa: S105
ROUTER_UID = 65532  # the image's USER
DEFAULT_ROUTER_IMAGE = "ghcr.io/kubetune/router:0.1.0"
DEFAULT_ROUTER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}
ANNOTATION_ROLLOUT = f"{GROUP}/rollout"
"""On the traffic object (router ConfigMap or HTTPRoute): which canary rollout its weights belong to."""


@dataclass(frozen=True)
class RouterSettings:
    """Operator-wide defaults (the chart's router values) and the spec's replica count."""

    image: str = DEFAULT_ROUTER_IMAGE
    replicas: int = 2
    resources: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_ROUTER_RESOURCES))
    scrape_annotations: bool = True
    """False when a PodMonitor scrapes the router (no double scrape)."""
    image_pull_secrets: tuple[str, ...] = ()
    monitor_labels: Mapping[str, str] = field(default_factory=dict)
    """Extra labels of the router's PodMonitor (what a Prometheus' podMonitorSelector matches)."""


def _name(mdep: Mapping[str, Any]) -> str:
    return str(mdep["metadata"]["name"])


def _namespace(mdep: Mapping[str, Any]) -> str:
    return str(mdep["metadata"]["namespace"])


def router_resource_name(deployment_name: str) -> str:
    """Name of the router's ConfigMap, Deployment, Service, PDB and PodMonitor (`<md>-router`)."""
    return child_name(deployment_name, ROLE_ROUTER)


def router_token_secret_name(deployment_name: str) -> str:
    """Name of the Secret holding the router's shared token (`<md>-router-token`)."""
    return child_name(deployment_name, ROLE_ROUTER_TOKEN)


def router_endpoint(mdep: Mapping[str, Any]) -> str:
    """The client-facing OpenAI API base URL in the cluster."""
    return f"http://{router_resource_name(_name(mdep))}.{_namespace(mdep)}.svc:{ROUTER_PORT}/v1"


def variant_upstream(mdep: Mapping[str, Any], variant_name: str) -> str:
    """The variant Service as a router upstream (scheme://host:port; the router keeps the request path)."""
    service = variant_resource_name(_name(mdep), variant_name)
    return f"http://{service}.{_namespace(mdep)}.svc:{VLLM_PORT}"


def selector_labels(deployment_name: str) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: deployment_name, LABEL_ROLE: ROLE_ROUTER}


def _labels(mdep: Mapping[str, Any]) -> dict[str, str]:
    return {
        **standard_labels(name="kubetune-router", component="router", instance=_name(mdep)),
        **selector_labels(_name(mdep)),
    }


def _meta(mdep: Mapping[str, Any], annotations: Mapping[str, str] | None = None) -> Manifest:
    return metadata(
        name=router_resource_name(_name(mdep)),
        namespace=_namespace(mdep),
        owner=mdep,
        labels=_labels(mdep),
        annotations=annotations,
    )


def _served_model(variant: Variant) -> str | None:
    if variant.served_by is not None:
        return variant.served_by.adapter
    return None if variant.adapters else variant.name


def build_router_config(
    mdep: Mapping[str, Any],
    weights: Mapping[str, int],
    ready: Mapping[str, bool],
    spec: ModelDeploymentSpec | None = None,
) -> RouterConfig:
    """Every variant of the spec, with the weight to apply and whether it may take traffic.

    A variant without its own adapters is always asked for by its name (the name vLLM serves it under,
    base or fine-tuned adapter), so the router rewrites `model`: clients send one model name whichever
    variant they land on. A variant that serves extra adapters keeps the client's `model`, which picks
    the adapter. A servedBy variant is its adapter's name in its host's pods.
    """
    spec = spec or ModelDeploymentSpec.model_validate(mdep["spec"])
    variants = tuple(
        RouterVariant(
            name=v.name,
            weight=weights.get(v.name, 0),
            endpoints=(variant_upstream(mdep, spec.pods_of(v.name)),),
            served_model=_served_model(v),
            ready=ready.get(v.name, False),
        )
        for v in spec.variants
    )
    return RouterConfig(
        variants=variants, sticky_header=spec.traffic.sticky_header, model_deployment=_name(mdep)
    )


def with_revision(config: RouterConfig, previous: RouterConfig | None, now: datetime) -> RouterConfig:
    """`config` with the revision routers order configs by: the previous one's while the content is the
    same (an unchanged config is byte-identical), else the time of this write in milliseconds, kept above
    the previous revision so a clock stepping back cannot make a new config look older."""
    if previous is not None and previous.model_copy(update={"revision": 0}) == config.model_copy(
        update={"revision": 0}
    ):
        return config.model_copy(update={"revision": previous.revision})
    floor = previous.revision + 1 if previous is not None else 0
    return config.model_copy(update={"revision": max(int(now.timestamp() * 1000), floor)})


def build_router_configmap(
    mdep: Mapping[str, Any], config: RouterConfig, annotations: Mapping[str, str] | None = None
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(mdep, annotations),
        "data": {CONFIG_FILE_NAME: config.to_json()},
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def build_router_deployment(mdep: Mapping[str, Any], settings: RouterSettings) -> Manifest:
    deployment_name = _name(mdep)
    name = router_resource_name(deployment_name)
    pod_annotations: dict[str, str] = {}
    if settings.scrape_annotations:
        pod_annotations = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(ROUTER_PORT),
            "prometheus.io/path": "/metrics",
        }
    container: dict[str, Any] = {
        "name": "router",
        "image": settings.image,
        "args": [
            "--config",
            f"{CONFIG_DIR}/{CONFIG_FILE_NAME}",
            "--port",
            str(ROUTER_PORT),
            "--token-file",
            f"{TOKEN_DIR}/{TOKEN_KEY}",
        ],
        "ports": [{"name": PORT_NAME, "containerPort": ROUTER_PORT, "protocol": "TCP"}],
        "resources": dict(settings.resources),
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # an emptyDir: the root filesystem is read-only
        ],
        "readinessProbe": _probe("/readyz", 5, 3),
        "livenessProbe": _probe("/healthz", 10, 6),
        "securityContext": dict(RESTRICTED_CONTAINER_SECURITY),
    }
    template_meta: dict[str, Any] = {"labels": dict(sorted(_labels(mdep).items()))}
    if pod_annotations:
        template_meta["annotations"] = dict(sorted(pod_annotations.items()))
    deployment: Manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(mdep),
        "spec": {
            "replicas": settings.replicas,
            "selector": {"matchLabels": selector_labels(_name(mdep))},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": template_meta,
                "spec": {
                    "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    # Long generations are streamed through the router: let them finish on a rollout.
                    "terminationGracePeriodSeconds": 300,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": ROUTER_UID,
                        "runAsGroup": ROUTER_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": CONFIG_VOLUME, "configMap": {"name": name}},
                        {
                            "name": TOKEN_VOLUME,
                            "secret": {"secretName": router_token_secret_name(deployment_name)},
                        },
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    return with_image_pull_secrets(deployment, settings.image_pull_secrets)


def build_router_token_secret(mdep: Mapping[str, Any], token: str) -> Manifest:
    """The Secret the router reads its shared token from. `token` is chosen by the caller (once)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(
            name=router_token_secret_name(_name(mdep)),
            namespace=_namespace(mdep),
            owner=mdep,
            labels={**_labels(mdep), LABEL_ROLE: ROLE_ROUTER_TOKEN},
        ),
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def router_token_of(secret: Mapping[str, Any] | None) -> str | None:
    """The token a stored router Secret holds; None when absent or empty."""
    if secret is None:
        return None
    encoded = (secret.get("data") or {}).get(TOKEN_KEY)
    if not encoded:
        return None
    try:
        token = base64.b64decode(encoded, validate=True).decode().strip()
    except (ValueError, UnicodeDecodeError):
        return None
    return token or None


def build_router_service(mdep: Mapping[str, Any]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(mdep),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(_name(mdep)),
            "ports": [{"name": PORT_NAME, "port": ROUTER_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_router_pdb(mdep: Mapping[str, Any], settings: RouterSettings) -> Manifest | None:
    if settings.replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(mdep),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(_name(mdep))}},
    }


def build_router_pod_monitor(
    mdep: Mapping[str, Any], monitor_labels: Mapping[str, str] | None = None
) -> Manifest:
    """Scrape the routers (their series carry `model_deployment` themselves, from the config)."""
    meta = _meta(mdep)
    meta["labels"] = dict(sorted({**(monitor_labels or {}), **meta["labels"]}.items()))
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector_labels(_name(mdep))},
            "podMetricsEndpoints": [
                {
                    "port": PORT_NAME,
                    "path": "/metrics",
                    "interval": "15s",
                }
            ],
        },
    }


def build_router_children(
    mdep: Mapping[str, Any],
    config: RouterConfig,
    settings: RouterSettings,
    *,
    pod_monitor: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> list[Manifest]:
    """ConfigMap first (the pods mount it), then Deployment, Service, PDB and PodMonitor when they apply.

    `annotations` go on the ConfigMap (the rollout the weights belong to).
    """
    children = [
        build_router_configmap(mdep, config, annotations),
        build_router_deployment(mdep, settings),
        build_router_service(mdep),
    ]
    pdb = build_router_pdb(mdep, settings)
    if pdb is not None:
        children.append(pdb)
    if pod_monitor:
        children.append(build_router_pod_monitor(mdep, settings.monitor_labels))
    return children


def router_config_of(configmap: Mapping[str, Any] | None) -> RouterConfig | None:
    """The config a router ConfigMap holds; None when absent or not a valid config."""
    if configmap is None:
        return None
    text = (configmap.get("data") or {}).get(CONFIG_FILE_NAME)
    if not text:
        return None
    try:
        return parse_router_config(text)
    except (ValidationError, ValueError):
        return None


def routed_weights(config: RouterConfig | None) -> dict[str, int]:
    """The split the router applies: configured weight of routable variants, 0 for the others."""
    if config is None:
        return {}
    return {v.name: v.weight if v.ready and v.endpoints else 0 for v in config.variants}
