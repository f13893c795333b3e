"""ModelDeploymentReconciler on an in-memory API: children applied, pruned, and the status reported."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.serving.objects import model_deployment
from tests.support.fake_kube import FakeKube

from kubetune.builders.router import build_router_token_secret, router_token_of
from kubetune.reconcile.modeldeployment import ModelDeploymentReconciler
from kubetune.settings import OperatorSettings, RouterDefaults

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def two_variants(**spec: Any) -> dict[str, Any]:
    return model_deployment(
        [
            {"name": "a", "model": {"uri": "pvc://models/a"}, "weight": 70},
            {"name": "b", "model": {"uri": "pvc://models/b"}, "weight": 30},
        ],
        **spec,
    )


def names(kube: FakeKube, kind: str) -> list[str]:
    return sorted(o["metadata"]["name"] for o in kube.of_kind(kind))


async def test_a_pass_applies_variants_and_router_and_reports_what_was_stored() -> None:
    kube = FakeKube()
    settings = OperatorSettings(
        vllm_image="vllm:test", router=RouterDefaults(image="router:test", replicas=3)
    )
    outcome = await ModelDeploymentReconciler(settings).reconcile(kube, two_variants(), NOW, resync=False)  # type: ignore[arg-type]
    assert names(kube, "Deployment") == ["chat-router", "chat-vllm-a", "chat-vllm-b"]
    router = kube.find("apps/v1", "Deployment", "ml", "chat-router")
    assert router is not None
    assert router["spec"]["replicas"] == 3
    assert router["spec"]["template"]["spec"]["containers"][0]["image"] == "router:test"
    vllm = kube.find("apps/v1", "Deployment", "ml", "chat-vllm-a")
    assert vllm is not None
    assert vllm["spec"]["template"]["spec"]["containers"][0]["image"] == "vllm:test"
    # Nothing is routable before the pods are available and smoke-tested.
    assert outcome.status["weights"] == "a=0,b=0"
    assert ("Normal", "Accepted") in [(e.type, e.reason) for e in outcome.events]
    assert outcome.requeue_after_s is None


async def test_pruning_runs_when_the_rendered_set_changes_and_removes_what_left_the_spec() -> None:
    kube = FakeKube()
    reconciler = ModelDeploymentReconciler(OperatorSettings())
    await reconciler.reconcile(kube, two_variants(), NOW, resync=False)  # type: ignore[arg-type]
    kube.calls.clear()
    await reconciler.reconcile(kube, two_variants(), NOW, resync=True)  # type: ignore[arg-type]
    assert ("PodDisruptionBudget", "") not in kube.verbs("list"), "same children: no prune listing"
    only_a = two_variants()
    only_a["spec"]["variants"] = only_a["spec"]["variants"][:1]
    only_a["spec"]["variants"][0]["weight"] = 100
    await reconciler.reconcile(kube, only_a, NOW, resync=False)  # type: ignore[arg-type]
    assert names(kube, "Deployment") == ["chat-router", "chat-vllm-a"]
    assert "chat-vllm-b" not in names(kube, "Service")


async def test_an_invalid_spec_is_reported_and_touches_nothing() -> None:
    kube = FakeKube()
    obj = two_variants()
    obj["spec"]["variants"][0]["weight"] = -1
    outcome = await ModelDeploymentReconciler(OperatorSettings()).reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
    assert outcome.status["phase"] == "Failed"
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "InvalidSpec")]
    assert kube.calls == []


def token_secret(kube: FakeKube) -> dict[str, Any]:
    secret = kube.find("v1", "Secret", "ml", "chat-router-token")
    assert secret is not None
    return secret


async def test_the_router_token_secret_is_created_once_and_kept_across_passes_and_restarts() -> None:
    kube = FakeKube()
    await ModelDeploymentReconciler(OperatorSettings()).reconcile(kube, two_variants(), NOW, resync=False)  # type: ignore[arg-type]
    first = token_secret(kube)
    assert first["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert router_token_of(first), "a random token"
    router = kube.find("apps/v1", "Deployment", "ml", "chat-router")
    assert router is not None
    volumes = router["spec"]["template"]["spec"]["volumes"]
    assert {"name": "token", "secret": {"secretName": "chat-router-token"}} in volumes
    assert [name for kind, name in kube.verbs("create") if kind == "Secret"] == ["chat-router-token"]
    kube.calls.clear()
    reconciler = ModelDeploymentReconciler(OperatorSettings())
    await reconciler.reconcile(kube, two_variants(), NOW, resync=True)  # type: ignore[arg-type]
    restarted = ModelDeploymentReconciler(OperatorSettings())  # a new process: nothing held in memory
    await restarted.reconcile(kube, two_variants(), NOW, resync=False)  # type: ignore[arg-type]
    assert token_secret(kube) == first
    secret_writes = [(v, k) for v, k, _ in kube.calls if k == "Secret" and v != "get"]
    assert secret_writes == [], "an existing Secret is never rewritten"


class SecretCreatedConcurrently(FakeKube):
    """Another writer creates the Secret between our read and our create."""

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        found = await super().get(api_version, kind, namespace, name)
        if kind == "Secret" and found is None:
            self.put(build_router_token_secret(two_variants(), "theirs"))
        return found


async def test_a_token_created_concurrently_wins_over_ours() -> None:
    kube = SecretCreatedConcurrently()
    await ModelDeploymentReconciler(OperatorSettings()).reconcile(kube, two_variants(), NOW, resync=False)  # type: ignore[arg-type]
    assert router_token_of(token_secret(kube)) == "theirs"


async def test_the_gateway_api_provider_gets_no_router_token() -> None:
    kube = FakeKube(crds={"httproutes.gateway.networking.k8s.io"})
    obj = two_variants(traffic={"provider": "gateway-api"})
    await ModelDeploymentReconciler(OperatorSettings()).reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
    assert kube.of_kind("Secret") == []
    assert ("Secret", "chat-router-token") not in kube.verbs("get")


async def test_vllm_pods_get_a_network_policy_behind_the_router_only() -> None:
    kube = FakeKube(crds={"httproutes.gateway.networking.k8s.io"})
    settings = OperatorSettings(operator_namespace="kubetune-system")
    reconciler = ModelDeploymentReconciler(settings)
    await reconciler.reconcile(kube, two_variants(), NOW, resync=False)  # type: ignore[arg-type]
    (policy,) = kube.of_kind("NetworkPolicy")
    assert policy["metadata"]["name"] == "chat-vllm"
    operator = policy["spec"]["ingress"][1]["from"][0]
    assert operator["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "kubetune-system"}
    }
    # A Gateway's pods must reach vLLM with gateway-api: the policy is pruned with the router.
    gateway = two_variants(traffic={"provider": "gateway-api", "gatewayParentRefs": [{"name": "g"}]})
    await reconciler.reconcile(kube, gateway, NOW, resync=False)  # type: ignore[arg-type]
    assert kube.of_kind("NetworkPolicy") == []
    # Off by the chart's value: none.
    off = FakeKube()
    await ModelDeploymentReconciler(OperatorSettings(network_policies=False)).reconcile(
        off, two_variants(), NOW, resync=False
    )  # type: ignore[arg-type]
    assert off.of_kind("NetworkPolicy") == []
