"""Make-before-break through the real API server: promotion and abort wait for ready pods and routers.

Pods run on a simulated node (kwok plays the kubelet); the router pods' `/kubetune/config` is played
by a local server named with `kubetune.io/router-config-url` (the operator cannot reach kwok pod IPs),
which serves the split the test says the routers have loaded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from tests.integration.test_modeldeployment_reconcile import get, md
from tests.integration.test_modeldeployment_traffic import (
    ENV,
    gpu_nodes,
    on_test_node,
    openai_servers,
    router_variants,
    with_smoke_urls,
)
from tests.support.cluster import Kube
from tests.support.fake_prometheus import serve_prometheus
from tests.support.local_http import send_json, threaded
from tests.support.operator import running_operator
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster

__all__ = ["gpu_nodes", "openai_servers"]  # module fixtures, used by name


class _RouterConfig(BaseHTTPRequestHandler):
    loaded: ClassVar[dict[str, Any] | None] = None

    def do_GET(self) -> None:
        if _RouterConfig.loaded is None:
            self.send_response(503)
            self.end_headers()
            return
        send_json(self, {"config": _RouterConfig.loaded, "routable": {}})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def router_config_url() -> Iterator[str]:
    _RouterConfig.loaded = None
    with threaded(_RouterConfig) as url:
        yield f"{url}/kubetune/config"


def routers_reload(kube: Kube, name: str, namespace: str) -> None:
    """The routers serve what the ConfigMap holds now."""
    configmap = get(kube, "configmap", f"{name}-router", namespace)
    assert configmap is not None
    _RouterConfig.loaded = json.loads(configmap["data"]["router.json"])


def holds(check: Callable[[], bool], seconds: float, message: str) -> None:
    """`check` stays true for `seconds` (several reconcile passes: the resync is 2 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), message
        time.sleep(0.2)


def patch(kube: Kube, namespace: str, canary: dict[str, Any]) -> None:
    """A user's edit of `spec.traffic.canary` (the operator never writes spec)."""
    body = json.dumps({"spec": {"traffic": {"canary": canary}}})
    kube.kubectl("patch", "modeldeployment", "mb", "-n", namespace, "--type=merge", "-p", body)


def test_promotion_and_abort_wait_for_ready_pods_and_every_router(
    kube: Kube, namespace: str, gpu_nodes: str, openai_servers: dict[str, str], router_config_url: str
) -> None:
    obj = md(
        "mb",
        [on_test_node("stable"), on_test_node("canary", uri="hf://Qwen/Qwen2.5-0.5B-Instruct")],
        traffic={
            "canary": {
                "stableVariant": "stable",
                "canaryVariant": "canary",
                "steps": [100],
                "interval": "2s",
                # Held until the stable variant serves (its smoke test races the canary's otherwise).
                "pause": True,
            }
        },
    )
    good = openai_servers["good"]
    with_smoke_urls(obj, {"stable": good, "canary": good})
    obj["metadata"]["annotations"]["kubetune.io/router-config-url"] = router_config_url
    kube.apply(obj, namespace)

    def replicas(variant: str) -> int:
        return int(get(kube, "deployment", f"mb-vllm-{variant}", namespace)["spec"]["replicas"])  # type: ignore[index]

    def ready(variant: str) -> int:
        deployment = get(kube, "deployment", f"mb-vllm-{variant}", namespace) or {}
        return int((deployment.get("status") or {}).get("readyReplicas", 0))

    def shifted() -> tuple[str, str] | None:
        mdep = get(kube, "modeldeployment", "mb", namespace) or {}
        for c in (mdep.get("status") or {}).get("conditions", []):
            if c["type"] == "TrafficShifted":
                return c["status"], c["reason"]
        return None

    env = {**ENV, "KUBETUNE_ROUTER_CONFIRM_SECONDS": "600"}
    with running_operator(kube, namespace, extra_env=env):
        eventually(
            lambda: router_variants(kube, "mb", namespace).get("stable") == (100, True),
            timeout=120,
            message="stable serving",
        )
        patch(kube, namespace, {"pause": False})
        eventually(
            lambda: router_variants(kube, "mb", namespace) == {"stable": (0, True), "canary": (100, True)},
            timeout=120,
            message="promoted: all weight on the canary, the stable still ready",
        )
        # The routers still serve the old split: the stable keeps its pod.
        eventually(lambda: shifted() == ("False", "WaitingForRouters"), message="waiting for the routers")
        holds(
            lambda: replicas("stable") == 1, 6, "the stable scaled down before the routers served the split"
        )
        routers_reload(kube, "mb", namespace)
        eventually(lambda: replicas("stable") == 0, message="stable scaled to zero once the routers serve it")
        eventually(lambda: shifted() == ("True", "TrafficSettled"), message="settled")

        patch(kube, namespace, {"abort": True})
        seen: list[tuple[int, int, int]] = []

        def moved() -> bool:
            stable_weight = router_variants(kube, "mb", namespace)["stable"][0]
            seen.append((stable_weight, ready("stable"), replicas("canary")))
            return stable_weight == 100

        eventually(moved, timeout=60, interval=0.1, message="abort: weight back on the stable")
        # Weight moved onto the stable only once it had a ready pod; the canary kept its pod meanwhile.
        assert all(stable_ready >= 1 for weight, stable_ready, _ in seen if weight > 0), seen
        assert all(canary == 1 for _, _, canary in seen), seen
        holds(
            lambda: replicas("canary") == 1, 6, "the canary scaled down before the routers served the split"
        )
        routers_reload(kube, "mb", namespace)
        eventually(lambda: replicas("canary") == 0, message="canary scaled to zero once the routers serve it")


def test_a_canary_step_is_analysed_only_once_every_router_serves_it(
    kube: Kube, namespace: str, gpu_nodes: str, openai_servers: dict[str, str], router_config_url: str
) -> None:
    def bad_canary(query: str) -> str:
        """20% errors over 120 requests: any analysis that runs rolls the canary back."""
        return "0.2" if 'code=~"5.."' in query else "120" if query.startswith("sum(increase(") else "50"

    def canary_status() -> dict[str, Any]:
        return dict(
            ((get(kube, "modeldeployment", "lag", namespace) or {}).get("status") or {}).get("canary") or {}
        )

    with serve_prometheus(bad_canary) as prometheus:
        obj = md(
            "lag",
            [on_test_node("stable"), on_test_node("canary", uri="hf://Qwen/Qwen2.5-0.5B-Instruct")],
            traffic={
                "canary": {
                    "stableVariant": "stable",
                    "canaryVariant": "canary",
                    "steps": [50, 100],
                    "interval": "2s",
                    "failureLimit": 1,
                    "analysis": {"prometheusUrl": prometheus, "maxErrorRate": 0.01, "minRequests": 10},
                }
            },
        )
        good = openai_servers["good"]
        with_smoke_urls(obj, {"stable": good, "canary": good})
        obj["metadata"]["annotations"]["kubetune.io/router-config-url"] = router_config_url
        kube.apply(obj, namespace)
        env = {**ENV, "KUBETUNE_ROUTER_CONFIRM_SECONDS": "600"}
        with running_operator(kube, namespace, extra_env=env):
            eventually(lambda: canary_status().get("weight") == 50, timeout=120, message="canary at 50%")
            # The routers serve the split from before the step (a kubelet has not synced the ConfigMap
            # volume yet): several intervals pass, nothing is analysed.
            holds(
                lambda: (
                    canary_status().get("weight") == 50
                    and "stepServedAt" not in canary_status()
                    and not canary_status().get("lastAnalysis")
                ),
                8,
                "the step was analysed before the routers served it",
            )

            def served() -> bool:
                routers_reload(kube, "lag", namespace)
                return "stepServedAt" in canary_status()

            eventually(served, timeout=60, message="the step served by every router")
            eventually(
                lambda: canary_status().get("weight") == 0 and bool(canary_status().get("lastAnalysis")),
                timeout=60,
                message="analysed once served, and rolled back",
            )
