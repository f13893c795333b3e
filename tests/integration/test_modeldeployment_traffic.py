"""Serving with running pods: smoke test before traffic, the router's split, the canary, the HTTPRoute.

Pods run on a simulated GPU node (kwok's controller plays the kubelet: pods turn Running and Ready), so
Deployments really become Available. The node is tainted and carries its own GPU product label, so only
these tests' variants (which tolerate the taint and select the product) land on it. The smoke test runs
against local fake OpenAI servers, named per variant with `kubetune.io/smoke-test-url-<variant>`.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_modeldeployment_reconcile import (
    GOMOD,
    established,
    get,
    md,
    variant_condition,
)
from tests.support.cluster import Kube
from tests.support.events import events_once, reasons, warned
from tests.support.fake_prometheus import serve_prometheus
from tests.support.local_http import send_json, threaded
from tests.support.operator import running_operator
from tests.support.polling import eventually

from kubetune.devcluster.kwok import KwokController, gpu_node

pytestmark = pytest.mark.cluster

GPU_PRODUCT = "KWOK-TEST-GPU"
TAINT = {"key": "kubetune.io/test-node", "value": "modeldeployment", "effect": "NoSchedule"}
GATEWAY_API = "sigs.k8s.io/gateway-api@v1.4.1"
HTTPROUTE_CRD = "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"
# The operator cannot reach kwok pod IPs: pods losing weight wait this long for the routers' read-back.
ENV = {
    "KUBETUNE_CRD_CACHE_SECONDS": "0",
    "KUBETUNE_SMOKE_WAIT_SECONDS": "2",
    "KUBETUNE_ROUTER_CONFIRM_SECONDS": "2",
}


class _Chat(BaseHTTPRequestHandler):
    """OpenAI chat completions: a short answer ending with EOS, or (never_stop) one running to the budget."""

    never_stop = False

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        budget = int(body.get("max_tokens") or 16)
        text, finish, tokens = (
            ("and then " * budget, "length", budget) if self.never_stop else ("Paris.", "stop", 3)
        )
        send_json(
            self,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5},
            },
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _NeverStops(_Chat):
    never_stop = True


@contextmanager
def openai_apis() -> Iterator[dict[str, str]]:
    """Two loopback OpenAI APIs: "good" answers and stops, "runaway" never emits EOS."""
    with threaded(_Chat) as good, threaded(_NeverStops) as runaway:
        yield {"good": f"{good}/v1", "runaway": f"{runaway}/v1"}


@pytest.fixture(scope="module")
def openai_servers() -> Iterator[dict[str, str]]:
    with openai_apis() as urls:
        yield urls


@contextmanager
def simulated_gpu_node(kube: Kube, name: str, workdir_prefix: str) -> Iterator[str]:
    """A tainted simulated GPU node, Ready, and the kwok controller that runs its pods."""
    workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix))
    controller = KwokController(kubeconfig=kube.kubeconfig, workdir=workdir)
    node = gpu_node(name, gpus=8, gpu_type=GPU_PRODUCT)
    node["spec"] = {"taints": [TAINT]}
    controller.start()
    try:
        kube.kubectl("create", "-f", "-", input=json.dumps(node))
        eventually(
            lambda: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (get_node(kube, name).get("status") or {}).get("conditions") or []
            ),
            message="simulated node Ready",
        )
        yield name
    finally:
        kube.kubectl("delete", "node", name, "--wait=false", check=False)
        controller.stop()


@pytest.fixture(scope="module")
def gpu_nodes(kube: Kube) -> Iterator[str]:
    with simulated_gpu_node(kube, "md-test-gpu-node", "kwok-md-") as node:
        yield node


def get_node(kube: Kube, name: str) -> dict[str, Any]:
    return dict(json.loads(kube.kubectl("get", "node", name, "-o", "json").stdout))


def on_test_node(
    name: str, weight: int = 0, replicas: int = 1, uri: str = "hf://Qwen/Qwen2.5-0.5B"
) -> dict[str, Any]:
    return {
        "name": name,
        "model": {"uri": uri},
        "weight": weight,
        "replicas": replicas,
        "resources": {
            "gpuType": GPU_PRODUCT,
            "tolerations": [
                {"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"], "effect": "NoSchedule"}
            ],
        },
    }


def with_smoke_urls(obj: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
    obj["metadata"]["annotations"] = {f"kubetune.io/smoke-test-url-{v}": url for v, url in urls.items()}
    return obj


def router_variants(kube: Kube, name: str, namespace: str) -> dict[str, tuple[int, bool]]:
    configmap = get(kube, "configmap", f"{name}-router", namespace)
    if configmap is None:
        return {}
    config = json.loads(configmap["data"]["router.json"])
    return {v["name"]: (v["weight"], v["ready"]) for v in config["variants"]}


def apply_b_never_stops(kube: Kube, namespace: str, openai_servers: dict[str, str]) -> None:
    """ModelDeployment ab, applied: variant a (60%) passes its smoke test, b (40%) never emits EOS."""
    obj = md(
        "ab",
        [on_test_node("a", weight=60), on_test_node("b", weight=40)],
        smokeTest={"prompts": ["Capital of France?"]},
    )
    kube.apply(with_smoke_urls(obj, {"a": openai_servers["good"], "b": openai_servers["runaway"]}), namespace)


def test_smoke_test_gates_traffic_per_variant(
    kube: Kube, namespace: str, gpu_nodes: str, openai_servers: dict[str, str]
) -> None:
    apply_b_never_stops(kube, namespace, openai_servers)
    with running_operator(kube, namespace, extra_env=ENV):
        eventually(
            lambda: router_variants(kube, "ab", namespace) == {"a": (60, True), "b": (40, False)},
            timeout=90,
            message="a in the split, b held out",
        )
        mdep = eventually(
            lambda: (
                (m := get(kube, "modeldeployment", "ab", namespace))
                and (c := variant_condition(m, "b", "SmokeTestPassed"))
                and c["status"] == "False"
                and m.get("status", {}).get("weights") == "a=60,b=0"
                and m
            ),
            timeout=60,
            message="status after both smoke tests",
        )
    passed = variant_condition(mdep, "a", "SmokeTestPassed")
    assert passed is not None
    assert passed["status"] == "True", passed
    failed = variant_condition(mdep, "b", "SmokeTestPassed")
    assert failed is not None
    assert failed["reason"] == "SmokeTestFailed"
    assert 'prompt 1/1 "Capital of France?"' in failed["message"]
    assert "never emitted EOS" in failed["message"]
    assert variant_condition(mdep, "b", "Available")["status"] == "True"
    status = mdep["status"]
    assert status["readyVariants"] == "2/2"
    assert status["phase"] == "Degraded"
    assert {v["name"]: v["readyReplicas"] for v in status["variants"]} == {"a": 1, "b": 1}
    events_once(kube, namespace, "ab", warned("SmokeTestFailed", "variant b"))


def paused_canary(name: str, steps: list[int], interval: str, **traffic: Any) -> dict[str, Any]:
    """ModelDeployment `name`: variants stable and canary (another model) on the test node, the canary's
    steps paused until the test resumes them; `traffic` adds to spec.traffic."""
    canary = {
        "stableVariant": "stable",
        "canaryVariant": "canary",
        "steps": steps,
        "interval": interval,
        "pause": True,
    }
    return md(
        name,
        [on_test_node("stable"), on_test_node("canary", uri="hf://Qwen/Qwen2.5-0.5B-Instruct")],
        traffic={**traffic, "canary": canary},
    )


def test_canary_steps_move_router_weights_and_replicas(
    kube: Kube, namespace: str, gpu_nodes: str, openai_servers: dict[str, str]
) -> None:
    # Held until the stable variant is routable: its smoke test races the canary's first step otherwise,
    # and the step would be seen as 50/not-ready.
    obj = paused_canary("cn", [50, 100], "4s")
    kube.apply(
        with_smoke_urls(obj, {"stable": openai_servers["good"], "canary": openai_servers["good"]}), namespace
    )
    seen: list[dict[str, tuple[int, bool]]] = []

    def observed() -> dict[str, tuple[int, bool]]:
        current = router_variants(kube, "cn", namespace)
        if current and (not seen or seen[-1] != current):
            seen.append(current)
        return current or {}

    def weights_reach(expected: dict[str, tuple[int, bool]]) -> bool:
        current = observed()
        if current != expected:
            # Raised, so that a timeout reports where the rollout stood.
            status = (get(kube, "modeldeployment", "cn", namespace) or {}).get("status")
            raise AssertionError(f"router {current}, seen {seen}, status {json.dumps(status)}")
        return True

    with running_operator(kube, namespace, extra_env=ENV):
        eventually(
            lambda: observed().get("stable") == (100, True),
            timeout=90,
            message="stable routable",
        )
        kube.kubectl(
            "patch",
            "modeldeployment",
            "cn",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec": {"traffic": {"canary": {"pause": false}}}}',
        )
        eventually(
            lambda: weights_reach({"stable": (50, True), "canary": (50, True)}),
            timeout=90,
            message="step 50%",
        )
        eventually(
            lambda: weights_reach({"stable": (0, False), "canary": (100, True)}),
            timeout=60,
            message="promoted",
        )
        mdep = eventually(
            lambda: (
                (m := get(kube, "modeldeployment", "cn", namespace))
                and any(
                    c["type"] == "Promoted" and c["status"] == "True"
                    for c in m["status"].get("conditions", [])
                )
                and m
            ),
            timeout=30,
            message="Promoted condition",
        )
        eventually(
            lambda: get(kube, "deployment", "cn-vllm-stable", namespace)["spec"]["replicas"] == 0,
            message="stable scaled to zero after promotion",
        )
        # The stable variant has no pods on purpose now: that is not a degradation.
        eventually(
            lambda: get(kube, "modeldeployment", "cn", namespace)["status"]["phase"] == "Available",
            message="phase Available after promotion",
        )
    # The stable variant never gave up weight before the canary's pod passed its smoke test.
    assert seen[0]["canary"][0] == 0, seen
    assert [s["canary"][0] for s in seen] == sorted(s["canary"][0] for s in seen), seen
    status = mdep["status"]
    assert status["canary"]["weight"] == 100
    assert status["weights"] == "stable=0,canary=100"
    rolled_back = next(c for c in status["conditions"] if c["type"] == "CanaryRolledBack")
    assert rolled_back["status"] == "False"
    events_once(kube, namespace, "cn", lambda found: {"CanaryStep", "Promoted"} <= reasons(found))


def true_condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The ModelDeployment's own condition `type_` when it is True, else None (for eventually)."""
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == type_ and c["status"] == "True":
            return dict(c)
    return None


def shared_base(interval: str, replicas: int = 1) -> dict[str, Any]:
    """ModelDeployment sb: v1 and v2 are adapters a1 and a2 in variant base's pods; v2 is canaried in
    (50%, then 100%) a step every `interval`."""
    base = on_test_node("base", replicas=replicas)
    base["adapters"] = [
        {"name": "a1", "uri": "hf://org/adapter-1"},
        {"name": "a2", "uri": "hf://org/adapter-2"},
    ]
    return md(
        "sb",
        [
            base,
            {"name": "v1", "servedBy": {"variant": "base", "adapter": "a1"}},
            {"name": "v2", "servedBy": {"variant": "base", "adapter": "a2"}},
        ],
        traffic={
            "canary": {"stableVariant": "v1", "canaryVariant": "v2", "steps": [50, 100], "interval": interval}
        },
    )


def test_adapter_variants_on_a_shared_base_roll_out_by_weight_alone(
    kube: Kube, namespace: str, gpu_nodes: str, openai_servers: dict[str, str]
) -> None:
    """Two servedBy variants in one base's pods: the canary moves router weight and nothing else.

    The resync is ten minutes, so only the reconciler's own requeue (the step interval) can move the
    canary from 50% to 100% within the test's timeout.
    """
    obj = shared_base(interval="3s", replicas=2)
    good = openai_servers["good"]
    kube.apply(with_smoke_urls(obj, {"base": good, "v1": good, "v2": good}), namespace)
    serving = "kubetune.io/deployment=sb,kubetune.io/role=vllm"

    def serving_deployments() -> list[dict[str, Any]]:
        out = kube.kubectl("get", "deployments", "-n", namespace, "-l", serving, "-o", "json").stdout
        return list(json.loads(out)["items"])

    with running_operator(kube, namespace, resync_seconds=600, extra_env=ENV):
        eventually(
            lambda: (
                router_variants(kube, "sb", namespace)
                == {"base": (0, True), "v1": (50, True), "v2": (50, True)}
            ),
            timeout=90,
            message="step 50%",
        )
        (at_first_step,) = serving_deployments()
        eventually(
            lambda: (
                router_variants(kube, "sb", namespace)
                == {"base": (0, True), "v1": (0, True), "v2": (100, True)}
            ),
            timeout=30,
            message="promoted by the requeue after the 3 s interval (the resync is 600 s)",
        )
        mdep = eventually(
            lambda: (
                (m := get(kube, "modeldeployment", "sb", namespace))
                and any(c["type"] == "Promoted" and c["status"] == "True" for c in m["status"]["conditions"])
                and m
            ),
            timeout=30,
            message="Promoted condition",
        )
        (after,) = serving_deployments()
        # An SRE aborts (a spec edit, as GitOps would apply it): traffic goes back to v1 at once,
        # through the watch event of the new generation (the resync is ten minutes away).
        kube.kubectl(
            "patch",
            "modeldeployment",
            "sb",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"traffic": {"canary": {"abort": True}}}}),
        )
        eventually(
            lambda: (
                router_variants(kube, "sb", namespace)
                == {"base": (0, True), "v1": (100, True), "v2": (0, True)}
            ),
            timeout=30,
            message="abort: all traffic back on v1",
        )
        aborted = eventually(
            lambda: true_condition(get(kube, "modeldeployment", "sb", namespace), "CanaryRolledBack"),
            timeout=30,
            message="CanaryRolledBack",
        )
        assert (aborted["status"], aborted["reason"]) == ("True", "CanaryAborted")
        events_once(kube, namespace, "sb", lambda found: "CanaryAborted" in reasons(found))
        assert serving_deployments()[0]["spec"]["replicas"] == 2, (
            "a shared base is never scaled by the canary"
        )
    # One set of pods throughout: no canary Deployment, the base neither resized nor re-templated.
    assert after["metadata"]["name"] == "sb-vllm-base"
    assert after["spec"]["replicas"] == 2
    assert after["metadata"]["generation"] == at_first_step["metadata"]["generation"]
    config = json.loads(get(kube, "configmap", "sb-router", namespace)["data"]["router.json"])  # type: ignore[index]
    routed = {v["name"]: (v["endpoints"], v.get("servedModel")) for v in config["variants"]}
    host = [f"http://sb-vllm-base.{namespace}.svc:8000"]
    assert routed["v1"] == (host, "a1")
    assert routed["v2"] == (host, "a2")
    by_name = {v["name"]: v for v in mdep["status"]["variants"]}
    assert by_name["v2"]["readyReplicas"] == 2
    assert by_name["v2"]["modelUri"] == "hf://org/adapter-2"
    assert variant_condition(mdep, "v2", "SmokeTestPassed")["status"] == "True"  # type: ignore[index]


@pytest.fixture
def httproute_crd(kube: Kube) -> Iterator[None]:
    path = GOMOD / GATEWAY_API / HTTPROUTE_CRD
    assert path.exists(), (
        f"{path} missing: run GOMODCACHE={GOMOD} GOFLAGS=-mod=mod go mod download {GATEWAY_API}"
    )
    kube.kubectl("apply", "--server-side", "--field-manager=test", "-f", str(path))
    established(kube, "httproutes.gateway.networking.k8s.io")
    try:
        yield
    finally:
        kube.kubectl("delete", "-f", str(path), "--ignore-not-found", "--wait=true")


def test_gateway_api_provider_renders_a_weighted_httproute(
    kube: Kube, namespace: str, gpu_nodes: str, openai_servers: dict[str, str], httproute_crd: None
) -> None:
    obj = md(
        "gw",
        [on_test_node("a", weight=70), on_test_node("b", weight=30)],
        traffic={"provider": "gateway-api", "gatewayParentRefs": [{"name": "public", "namespace": "infra"}]},
    )
    kube.apply(with_smoke_urls(obj, {"a": openai_servers["good"], "b": openai_servers["good"]}), namespace)
    with running_operator(kube, namespace, extra_env=ENV):
        mdep = eventually(
            lambda: (
                (m := get(kube, "modeldeployment", "gw", namespace))
                and m.get("status", {}).get("weights") == "a=70,b=30"
                and m
            ),
            timeout=90,
            message="observed weights from the HTTPRoute",
        )
        route = get(kube, "httproute", "gw-router", namespace)
    assert route is not None
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "infra"}
    ]
    backends = route["spec"]["rules"][0]["backendRefs"]
    assert {(b["name"], b["port"], b["weight"]) for b in backends} == {
        ("gw-vllm-a", 8000, 70),
        ("gw-vllm-b", 8000, 30),
    }
    assert get(kube, "configmap", "gw-router", namespace) is None, "no router with the gateway-api provider"
    assert get(kube, "deployment", "gw-router", namespace) is None
    assert mdep["status"]["phase"] == "Available"


Seen = tuple[str | None, str | None, str | None]
"""Override, synthetic and token headers of one request."""


class _RecordingRouter(_Chat):
    """Stands in for the router: answers like a backend and records who asked for which variant."""

    seen: list[Seen] = []

    def do_POST(self) -> None:
        self.seen.append(
            (
                self.headers.get("x-kubetune-variant"),
                self.headers.get("x-kubetune-synthetic"),
                self.headers.get("x-kubetune-token"),
            )
        )
        super().do_POST()


@pytest.fixture
def recording_router() -> Iterator[tuple[str, list[Seen]]]:
    seen: list[Seen] = []
    with threaded(type("Recorder", (_RecordingRouter,), {"seen": seen})) as url:
        yield f"{url}/v1", seen


@pytest.fixture
def failing_canary_metrics() -> Iterator[str]:
    """A canary with 20% errors over 120 requests."""
    with serve_prometheus(
        lambda q: "0.2" if 'code=~"5.."' in q else "120" if q.startswith("sum(increase(") else "50"
    ) as url:
        yield url


def test_failed_analysis_rolls_the_canary_back(
    kube: Kube,
    namespace: str,
    gpu_nodes: str,
    openai_servers: dict[str, str],
    failing_canary_metrics: str,
    recording_router: tuple[str, list[Seen]],
) -> None:
    router_url, synthetic_seen = recording_router
    canary = {
        "stableVariant": "stable",
        "canaryVariant": "canary",
        "steps": [25, 100],
        "interval": "2s",
        "failureLimit": 1,
        "analysis": {
            "prometheusUrl": failing_canary_metrics,
            "maxErrorRate": 0.01,
            "minRequests": 10,
            "syntheticTraffic": {"enabled": True, "requestsPerSecond": 5},
        },
    }
    obj = md(
        "rb",
        [on_test_node("stable"), on_test_node("canary", uri="hf://Qwen/Qwen2.5-0.5B-Instruct")],
        traffic={"canary": canary},
    )
    with_smoke_urls(obj, {"stable": openai_servers["good"], "canary": openai_servers["good"]})
    obj["metadata"]["annotations"]["kubetune.io/synthetic-traffic-url"] = router_url
    kube.apply(obj, namespace)
    with running_operator(kube, namespace, extra_env=ENV):
        eventually(lambda: router_variants(kube, "rb", namespace).get("canary") == (25, True), timeout=90)
        mdep = eventually(
            lambda: (
                (m := get(kube, "modeldeployment", "rb", namespace))
                and any(
                    c["type"] == "CanaryRolledBack" and c["status"] == "True"
                    for c in m["status"].get("conditions", [])
                )
                and m
            ),
            timeout=60,
            message="CanaryRolledBack",
        )
        eventually(
            lambda: router_variants(kube, "rb", namespace) == {"stable": (100, True), "canary": (0, False)},
            message="all traffic back on stable",
        )
        eventually(
            lambda: get(kube, "deployment", "rb-vllm-canary", namespace)["spec"]["replicas"] == 0,
            message="canary scaled to zero",
        )
        eventually(
            lambda: get(kube, "modeldeployment", "rb", namespace)["status"]["phase"] == "Available",
            message="phase Available on the stable variant after the rollback",
        )
        # While the canary was analysed the operator sent marked requests pinned to both variants;
        # a rolled-back canary needs no samples, so they stopped.
        sent = len(synthetic_seen)
        time.sleep(2)
        assert len(synthetic_seen) == sent
    assert {variant for variant, _, _ in synthetic_seen} == {"stable", "canary"}
    assert {marker for _, marker, _ in synthetic_seen} == {"1"}
    # Signed with the token the operator created in the router's Secret (which the router mounts), and
    # that token shows up nowhere else: not in status, not in Events.
    secret = get(kube, "secret", "rb-router-token", namespace)
    assert secret is not None
    assert secret["metadata"]["ownerReferences"][0]["name"] == "rb"
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert {sent_token for _, _, sent_token in synthetic_seen} == {token}
    router_pod = get(kube, "deployment", "rb-router", namespace)["spec"]["template"]["spec"]
    assert {"name": "token", "secret": {"secretName": "rb-router-token", "defaultMode": 420}} in router_pod[
        "volumes"
    ]
    assert token not in json.dumps(mdep)
    condition = next(c for c in mdep["status"]["conditions"] if c["type"] == "CanaryRolledBack")
    assert condition["reason"] == "AnalysisFailed"
    assert "errorRate=0.2 > 0.01 over 120 requests" in condition["message"]
    assert (
        'kubetune_router_requests_total{code=~"5.."' in condition["message"]
        or "query:" in condition["message"]
    )
    assert mdep["status"]["canary"]["lastAnalysis"][0]["value"] == 0.2
    announced = events_once(kube, namespace, "rb", warned("AnalysisFailed", "errorRate=0.2"))
    assert token not in json.dumps(announced)
