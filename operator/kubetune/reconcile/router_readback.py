"""Read back the split each router pod serves (`GET /kubetune/config` on every router pod).

The operator pushes each new config to the router pods (`router_push`), and the ConfigMap reaches a
router the push missed through the kubelet's volume update and the router's own file poll; until every
router pod serves the new split, a variant losing weight may still get requests and must keep its
pods. A router pod is asked on its pod IP: the Service would answer for one pod only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from kubetune.api.common import GROUP
from kubetune.api.routerconfig import parse_router_config
from kubetune.builders.router import ROUTER_PORT, routed_weights, selector_labels
from kubetune.kube.client import KubeClient
from kubetune.outbound import OutboundError, read_capped
from kubetune.planning.smoke import overridden_url
from kubetune.planning.traffic_shift import RouterView
from kubetune.status.pods import pod_ready_ip

ROUTER_CONFIG_URL_ANNOTATION = f"{GROUP}/router-config-url"
"""`kubetune.io/router-config-url`: read this URL instead of the router pods (tests; needs URL overrides)."""
READ_TIMEOUT_S = 2.0


def serving_routers(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """Config URLs of the router pods that take traffic: Ready, not terminating, with an IP."""
    return sorted(f"http://{ip}:{ROUTER_PORT}/kubetune/config" for pod in pods if (ip := pod_ready_ip(pod)))


def serves(document: Any, expected: Mapping[str, int]) -> bool:
    """Whether a router's `/kubetune/config` answer routes the `expected` split."""
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        return False
    try:
        config = parse_router_config(json.dumps(document["config"]))
    except ValueError:
        return False
    return routed_weights(config) == dict(expected)


# A router's /kubetune/config is the RouterConfig it serves: kilobytes, even with many variants.
CONFIG_BODY_LIMIT = 1 << 20


async def router_config_urls(
    client: KubeClient, mdep: Mapping[str, Any], *, allow_url_overrides: bool
) -> list[str]:
    """`/kubetune/config` of each router pod taking traffic (or the test's override)."""
    meta = mdep["metadata"]
    override = overridden_url(mdep, ROUTER_CONFIG_URL_ANNOTATION, "", allowed=allow_url_overrides)
    if override:
        return [override]
    selector = ",".join(f"{k}={v}" for k, v in sorted(selector_labels(meta["name"]).items()))
    return serving_routers(await client.list("v1", "Pod", meta["namespace"], label_selector=selector))


async def read_routers(
    client: KubeClient,
    mdep: Mapping[str, Any],
    expected: Mapping[str, int],
    *,
    allow_url_overrides: bool,
    waited_s: float,
) -> RouterView:
    """How many router pods taking traffic route the `expected` split (`routed_weights` of the config
    written to the ConfigMap)."""
    urls = await router_config_urls(client, mdep, allow_url_overrides=allow_url_overrides)
    timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        answers = await asyncio.gather(*(_serves(session, url, expected) for url in urls))
    return RouterView(serving=sum(answers), total=len(urls), waited_s=waited_s)


async def _serves(session: aiohttp.ClientSession, url: str, expected: Mapping[str, int]) -> bool:
    try:
        # The operator's outbound rules (kubetune.outbound): no redirects, a capped body.
        async with session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                return False
            document = json.loads(await read_capped(response, CONFIG_BODY_LIMIT))
    except (aiohttp.ClientError, TimeoutError, ValueError, OutboundError):
        return False
    return serves(document, expected)
