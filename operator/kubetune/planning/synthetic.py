"""Which ModelDeployments get synthetic traffic now, and what it is. Pure.

Level-triggered like the rest: every pass states the load it wants (or None) and the reconciler's
`SyntheticTraffic` starts, replaces or stops the object's generator to match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubetune.api.common import GROUP
from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.builders.httproute import GATEWAY_PROVIDERS
from kubetune.builders.router import router_endpoint
from kubetune.planning.canary import CanaryOutcome, CanaryPlan
from kubetune.planning.smoke import overridden_url
from kubetune.serving.smoke import smoke_prompts
from kubetune.serving.synthetic import SyntheticLoad, plan_prompts

SYNTHETIC_URL_ANNOTATION = f"{GROUP}/synthetic-traffic-url"
"""Send synthetic traffic to this router URL instead of the router Service (tests, dev only)."""


def desired_load(
    mdep: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    plan: CanaryPlan | None,
    test_prompts: Sequence[str],
    *,
    allow_url_override: bool = False,
    token: str | None = None,
) -> SyntheticLoad | None:
    """A load while a canary with synthetic traffic on is being analysed; None otherwise.

    Only between the first step and promotion: before the canary takes weight there is nothing to
    judge, and a canary paused by the user, promoted or rolled back needs no samples. Needs the router (the
    override and synthetic headers are the router's); `token` is the router's shared token, which
    those headers need to count.
    """
    canary = spec.traffic.canary
    if canary is None or canary.analysis is None or plan is None:
        return None
    if not canary.analysis.synthetic_traffic.enabled or spec.traffic.provider in GATEWAY_PROVIDERS:
        return None
    # A canary paused for want of a verdict keeps its samples coming: a verdict resumes it.
    analysing = plan.outcome is CanaryOutcome.PROGRESSING or plan.reason is Reason.ANALYSIS_STALLED
    if not analysing or plan.status.weight == 0:
        return None
    return SyntheticLoad(
        url=overridden_url(mdep, SYNTHETIC_URL_ANNOTATION, router_endpoint(mdep), allowed=allow_url_override),
        variants=(canary.stable_variant, canary.canary_variant),
        prompts=plan_prompts(test_prompts, smoke_prompts(spec.smoke_test)),
        requests_per_second=canary.analysis.synthetic_traffic.requests_per_second,
        max_tokens=min(spec.smoke_test.max_tokens, 128),
        token=token,
    )
