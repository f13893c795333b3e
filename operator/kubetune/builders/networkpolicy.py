"""NetworkPolicies around the workloads the operator creates. Pure functions only.

vLLM pods answer whoever reaches them (no auth on the OpenAI API): only the ModelDeployment's own
router, the operator (smoke tests) and Prometheus (scrapes, from the monitoring namespace) may. A
training gang talks on the rendezvous port and NCCL's ephemeral ports: only its own members may.
Egress is left open (model downloads, S3, the API server for rank 0's status).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubetune.builders.common import (
    LABEL_DEPLOYMENT,
    LABEL_ROLE,
    Manifest,
    child_name,
    metadata,
    standard_labels,
)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
OPERATOR_POD_LABELS = {"app.kubernetes.io/part-of": "kubetune", "app.kubernetes.io/component": "operator"}
"""Labels of the chart's operator pod."""


@dataclass(frozen=True)
class Peers:
    """Who else may reach serving pods: where the operator and Prometheus run."""

    operator_namespace: str | None = None
    """None: the operator pod in any namespace (run outside the chart, e.g. in tests)."""
    monitoring_namespace: str | None = "monitoring"
    """None: no scrapes from another namespace."""


def _in_namespace(name: str | None) -> dict[str, Any]:
    return {"matchLabels": {NAMESPACE_NAME_LABEL: name}} if name else {}


def build_vllm_network_policy(
    mdep: Mapping[str, Any], *, router_role: str, serving_role: str, port: int, peers: Peers
) -> Manifest:
    """Ingress to the ModelDeployment's vLLM pods: its router, the operator, Prometheus."""
    name = str(mdep["metadata"]["name"])
    ports = [{"protocol": "TCP", "port": port}]
    sources: list[dict[str, Any]] = [
        {
            "from": [{"podSelector": {"matchLabels": {LABEL_DEPLOYMENT: name, LABEL_ROLE: router_role}}}],
            "ports": ports,
        },
        {
            "from": [
                {
                    "namespaceSelector": _in_namespace(peers.operator_namespace),
                    "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
                }
            ],
            "ports": ports,
        },
    ]
    if peers.monitoring_namespace:
        sources.append(
            {"from": [{"namespaceSelector": _in_namespace(peers.monitoring_namespace)}], "ports": ports}
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            name=child_name(name, serving_role),
            namespace=str(mdep["metadata"]["namespace"]),
            owner=mdep,
            labels={
                **standard_labels(name="vllm", component="serving", instance=name),
                LABEL_DEPLOYMENT: name,
            },
        ),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_DEPLOYMENT: name, LABEL_ROLE: serving_role}},
            "policyTypes": ["Ingress"],
            "ingress": sources,
        },
    }


def build_gang_network_policy(
    name: str, namespace: str, owner: Mapping[str, Any], labels: Mapping[str, str], gang: Mapping[str, str]
) -> Manifest:
    """Ingress to a training gang's pods (`gang` selects them) from its own members only, any port."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name=name, namespace=namespace, owner=owner, labels=labels),
        "spec": {
            "podSelector": {"matchLabels": dict(gang)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": dict(gang)}}]}],
        },
    }
