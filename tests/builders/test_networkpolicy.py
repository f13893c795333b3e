"""NetworkPolicies around vLLM pods and training gangs."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.builders.finetunejob import build_children
from kubetune.builders.networkpolicy import Peers, build_vllm_network_policy

MDEP: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"},
}


def sources(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]


@pytest.mark.parametrize(
    ("peers", "operator_namespaces", "monitoring"),
    [
        (Peers("kubetune-system", "monitoring"), {"kubernetes.io/metadata.name": "kubetune-system"}, True),
        (Peers(None, None), {}, False),
    ],
)
def test_vllm_pods_admit_their_router_the_operator_and_prometheus_only(
    peers: Peers, operator_namespaces: dict[str, str], monitoring: bool
) -> None:
    policy = build_vllm_network_policy(
        MDEP, router_role="router", serving_role="vllm", port=8000, peers=peers
    )
    assert policy["metadata"]["name"] == "chat-vllm"
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "kubetune.io/deployment": "chat",
        "kubetune.io/role": "vllm",
    }
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert all(rule["ports"] == [{"protocol": "TCP", "port": 8000}] for rule in policy["spec"]["ingress"])
    router, operator, *rest = sources(policy)
    assert router == {
        "podSelector": {"matchLabels": {"kubetune.io/deployment": "chat", "kubetune.io/role": "router"}}
    }
    assert "namespaceSelector" not in router, "the router of this ModelDeployment, in its namespace"
    assert operator["namespaceSelector"] == (
        {"matchLabels": operator_namespaces} if operator_namespaces else {}
    )
    assert operator["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert rest == (
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        if monitoring
        else []
    )
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_a_training_gang_admits_its_own_members_only() -> None:
    ftj = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "sft", "namespace": "ml", "uid": "u-2"},
        "spec": {
            "baseModel": {"uri": "pvc://m/x"},
            "dataset": {"uri": "pvc://d/x.jsonl"},
            "output": {"uri": "pvc://o/x"},
            "resources": {"nodes": 2},
        },
    }
    children = build_children(ftj, restart=0)
    policy = children.network_policy
    gang = children.training_job["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert all(gang[k] == v for k, v in selector.items()), "selects the training pods"
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": selector}}]}]
    validation = children.validation_job["spec"]["template"]["metadata"]["labels"]
    assert not all(validation.get(k) == v for k, v in selector.items()), "the validation pod is not a member"
    assert policy in children.shared()
    assert policy not in children.for_validation()
