"""The operator pushes each new router config to the router pods: the real router binary serves a new
split within seconds while its ConfigMap file is still the old one (a kubelet that has not synced the
volume yet), and a stale file never undoes the push.

The router runs on loopback, named with `kubetune.io/router-config-url` (the operator pushes to and reads
back that URL instead of the router pods' IPs); its token file is the operator's Secret, as mounted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from tests.integration.test_modeldeployment_reconcile import get, md
from tests.integration.test_modeldeployment_traffic import ENV
from tests.router.fakes import RouterHarness, start_router
from tests.support.cluster import Kube
from tests.support.operator import running_operator
from tests.support.polling import aeventually, eventually

from kubetune.api.routerconfig import RouterConfig, RouterVariant, parse_router_config
from kubetune.reconcile.router_readback import ROUTER_CONFIG_URL_ANNOTATION

pytestmark = pytest.mark.cluster

PLACEHOLDER = RouterConfig(variants=(RouterVariant(name="a", weight=100),))
"""What the router pod starts from before the operator's first config reaches its volume."""


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[RouterHarness]:
    harness = await start_router(PLACEHOLDER, tmp_path / "router.json", token="not-yet-mounted")
    try:
        yield harness
    finally:
        await harness.close()


def variant(name: str, weight: int) -> dict[str, Any]:
    return {"name": name, "model": {"uri": "hf://Qwen/Qwen2.5-0.5B"}, "weight": weight}


def stored_config(kube: Kube, namespace: str) -> RouterConfig | None:
    configmap = get(kube, "configmap", "push-router", namespace)
    return parse_router_config(configmap["data"]["router.json"]) if configmap else None


def pushes(result: str) -> float:
    return REGISTRY.get_sample_value("kubetune_router_config_pushes_total", {"result": result}) or 0.0


async def serving(router: RouterHarness) -> RouterConfig:
    async with router.session.get(router.url + "/kubetune/config") as response:
        return parse_router_config(json.dumps((await response.json())["config"]))


async def test_a_new_split_reaches_the_router_by_push_and_a_stale_file_never_undoes_it(
    kube: Kube, namespace: str, router: RouterHarness
) -> None:
    obj = md("push", [variant("a", 100), variant("b", 0)])
    obj["metadata"]["annotations"] = {ROUTER_CONFIG_URL_ANNOTATION: router.url + "/kubetune/config"}
    kube.apply(obj, namespace)
    refused_before = pushes("failed")
    with running_operator(kube, namespace, extra_env=ENV):
        first = eventually(lambda: stored_config(kube, namespace), timeout=60, message="router ConfigMap")
        assert first.revision > 0
        # The first push carried a token the router did not have yet: refused, the placeholder kept.
        eventually(lambda: pushes("failed") > refused_before, timeout=30, message="the refused push")
        assert (await serving(router)) == PLACEHOLDER

        secret = get(kube, "secret", "push-router-token", namespace)
        assert secret is not None
        assert router.token_path is not None
        router.token_path.write_text(base64.b64decode(secret["data"]["token"]).decode())
        accepted_before = pushes("accepted")

        body = json.dumps({"spec": {"variants": [variant("a", 30), variant("b", 70)]}})
        kube.kubectl("patch", "modeldeployment", "push", "-n", namespace, "--type=merge", "-p", body)

        def written() -> RouterConfig:
            config = stored_config(kube, namespace)
            assert config is not None
            assert config.weights() == {"a": 30, "b": 70}, config
            return config

        second = eventually(written, timeout=60, message="the new split written")
        assert second.revision > first.revision

        async def pushed() -> RouterConfig:
            served = await serving(router)
            assert served == second, served
            return served

        await aeventually(pushed, timeout=10, message="the router serving the pushed config")
        assert pushes("accepted") >= accepted_before + 1
        assert router.config_path.read_text() == PLACEHOLDER.to_json(), "the file was never synced"

        # The kubelet syncs the volume late, with the content of the first write: the push stands.
        router.write_config(first)

        async def kept() -> bool:
            assert any("older than the pushed config" in line for line in router.log), router.log[-5:]
            return True

        await aeventually(kept, timeout=10, message="the stale file refused")
        assert (await serving(router)) == second
        # Then with the current content: installed (same revision), nothing changes.
        router.write_config(second)
        await aeventually(
            lambda: _reloaded(router, second.revision), timeout=10, message="the current file installed"
        )
        assert (await serving(router)) == second


async def _reloaded(router: RouterHarness, revision: int) -> bool:
    return any("router config reloaded" in line and f"revision={revision}" in line for line in router.log)
