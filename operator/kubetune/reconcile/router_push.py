"""Push a new router config to every router pod (`PUT /kubetune/config`, signed with the router token).

A ConfigMap change reaches a router pod's volume only at the kubelet's next sync of that pod, measured
at 44 to 80 s on the real node: every canary step and every rollback would reach the routers that late.
The operator sends the config it just wrote to each router pod taking traffic instead. The ConfigMap stays
the durable copy (a router starting, or one the push missed, reads it), and the config's `revision`
keeps a file the kubelet has not synced yet from undoing a push. A push that fails is logged and left to
the volume: it only makes the router late, as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from kubetune.api.routerconfig import TOKEN_HEADER, RouterConfig
from kubetune.kube.client import KubeClient
from kubetune.metrics import ROUTER_CONFIG_PUSHES
from kubetune.outbound import OutboundError, read_capped
from kubetune.reconcile.router_readback import router_config_urls

log = logging.getLogger(__name__)

PUSH_TIMEOUT_S = 2.0
ANSWER_LIMIT = 4096


def needs_push(config: RouterConfig, previous: RouterConfig | None) -> bool:
    """A config is pushed when this pass gave it a new revision (its content changed)."""
    return previous is None or config.revision != previous.revision


async def push_router_config(
    client: KubeClient,
    mdep: Mapping[str, Any],
    config: RouterConfig,
    token: str,
    *,
    allow_url_overrides: bool,
) -> None:
    """Counted in `kubetune_router_config_pushes_total`; nobody waits on the answer (the read-back
    confirms what routers serve)."""
    urls = await router_config_urls(client, mdep, allow_url_overrides=allow_url_overrides)
    body = config.to_json()
    headers = {TOKEN_HEADER: token, "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=PUSH_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        answers = await asyncio.gather(*(_push(session, url, body, headers) for url in urls))
    accepted = sum(answers)
    ROUTER_CONFIG_PUSHES.labels("accepted").inc(accepted)
    ROUTER_CONFIG_PUSHES.labels("failed").inc(len(urls) - accepted)


async def _push(session: aiohttp.ClientSession, url: str, body: str, headers: dict[str, str]) -> bool:
    try:
        # The operator's outbound rules (kubetune.outbound): no redirects, a capped body.
        async with session.put(url, data=body, headers=headers, allow_redirects=False) as response:
            answer = await read_capped(response, ANSWER_LIMIT)
            if response.status != 200:
                # The router's answer names the problem (never the token, which it does not echo).
                text = answer[:200].decode(errors="replace")
                log.warning("router config push to %s: HTTP %s %s", url, response.status, text)
                return False
    except (aiohttp.ClientError, TimeoutError, OutboundError) as exc:
        log.info("router config push to %s failed (the ConfigMap volume will bring it): %s", url, exc)
        return False
    return took_push(answer)


def took_push(answer: bytes) -> bool:
    """Whether a 200 answer is a router's verdict on a push; a router image from before pushes answers
    a PUT with its config, as for a GET, and installs nothing."""
    try:
        verdict = json.loads(answer)
    except ValueError:
        return False
    return isinstance(verdict, dict) and isinstance(verdict.get("installed"), bool)
