"""Which ModelDeployments get synthetic traffic now, and the background generators that send it.

Level-triggered like the rest: every pass states the load it wants (or None) and `ensure` starts,
replaces or stops the object's generator to match. A restarted operator starts it again on its first pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from kubetune.api.common import GROUP
from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.builders.router import router_endpoint
from kubetune.reconcile.smoke import overridden_url
from kubetune.reconcile.traffic import GATEWAY_API
from kubetune.serving.smoke import smoke_prompts
from kubetune.serving.synthetic import SyntheticLoad, generate, plan_prompts
from kubetune.status.canary import CanaryOutcome, CanaryPlan

SYNTHETIC_URL_ANNOTATION = f"{GROUP}/synthetic-traffic-url"
"""Send synthetic traffic to this router URL instead of the router Service (tests, dev only)."""

_generators: dict[tuple[str, str], tuple[SyntheticLoad, asyncio.Task[None]]] = {}


def desired_load(
    mdep: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    plan: CanaryPlan | None,
    test_prompts: Sequence[str],
) -> SyntheticLoad | None:
    """A load while a canary with synthetic traffic on is being analysed; None otherwise.

    Only between the first step and promotion: before the canary takes weight there is nothing to
    judge, and a paused, promoted or rolled-back canary needs no samples. Needs the router (the
    override and synthetic headers are the router's).
    """
    canary = spec.traffic.canary
    if canary is None or canary.analysis is None or plan is None:
        return None
    if not canary.analysis.synthetic_traffic.enabled or spec.traffic.provider == GATEWAY_API:
        return None
    if plan.outcome is not CanaryOutcome.PROGRESSING or plan.status.weight == 0:
        return None
    return SyntheticLoad(
        url=overridden_url(mdep, SYNTHETIC_URL_ANNOTATION, router_endpoint(mdep)),
        variants=(canary.stable_variant, canary.canary_variant),
        prompts=plan_prompts(test_prompts, smoke_prompts(spec.smoke_test)),
        requests_per_second=canary.analysis.synthetic_traffic.requests_per_second,
        max_tokens=min(spec.smoke_test.max_tokens, 128),
    )


def ensure(namespace: str, name: str, load: SyntheticLoad | None) -> None:
    """Run exactly `load` for this object (nothing when None)."""
    key = (namespace, name)
    current = _generators.get(key)
    if current is not None and current[0] == load and not current[1].done():
        return
    if current is not None:
        current[1].cancel()
        del _generators[key]
    if load is not None:
        _generators[key] = (load, asyncio.get_running_loop().create_task(generate(load)))


def active(namespace: str, name: str) -> SyntheticLoad | None:
    current = _generators.get((namespace, name))
    return current[0] if current is not None and not current[1].done() else None


def stop(namespace: str, name: str) -> None:
    ensure(namespace, name, None)
