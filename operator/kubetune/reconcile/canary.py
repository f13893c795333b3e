"""One canary pass: plan, analyse when due, plan again with the analysis.

The state machine is pure (`kubetune.planning.canary.plan_canary`); this module adds the I/O around it
(the Prometheus analysis). A Prometheus that cannot be reached (or is not Prometheus) is no verdict on
the canary: no failure is counted, the analysis is retried after an interval, and `noVerdictLimit`
analyses in a row without a verdict pause the canary (reason AnalysisStalled, a Warning Event).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp

from kubetune.analysis.evaluator import AnalysisOutcome
from kubetune.analysis.prometheus import PrometheusClient, PrometheusError
from kubetune.analysis.run import analyze
from kubetune.api.modeldeployment import Canary, ModelDeploymentSpec
from kubetune.planning.canary import CanaryPlan, plan_canary
from kubetune.planning.canary_report import canary_events
from kubetune.planning.modeldeployment import CanaryInputs
from kubetune.planning.plan import Event

ANALYSIS_TIMEOUT_S = 30.0
"""A Prometheus that accepts connections but never answers holds one reconcile pass at most this long."""


@dataclass(frozen=True)
class CanaryPass:
    plan: CanaryPlan
    events: list[Event] = field(default_factory=list)


async def run_canary(
    spec: ModelDeploymentSpec,
    inputs: CanaryInputs,
    *,
    namespace: str,
    deployment: str,
    now: datetime,
    prometheus_allowlist: Sequence[str] | None = None,
) -> CanaryPass:
    canary = spec.traffic.canary
    assert canary is not None
    by_name = {v.name: v for v in spec.variants}
    stable, candidate = by_name[canary.stable_variant], by_name[canary.canary_variant]

    def planned(analysis: AnalysisOutcome | None = None, error: str | None = None) -> CanaryPlan:
        return plan_canary(
            canary,
            stable,
            candidate,
            inputs.previous,
            now=now,
            canary_ready_replicas=inputs.ready_replicas,
            shared_base=inputs.shared_base,
            analysis=analysis,
            analysis_error=error,
            routers_serving=inputs.routers_serving,
        )

    plan = planned()
    if plan.analysis_due and canary.analysis is not None:
        try:
            outcome = await asyncio.wait_for(
                _analyze(
                    canary, plan, namespace=namespace, deployment=deployment, allowed=prometheus_allowlist
                ),
                ANALYSIS_TIMEOUT_S,
            )
        except TimeoutError:
            plan = planned(error=f"Prometheus did not answer within {ANALYSIS_TIMEOUT_S:.0f}s")
        except PrometheusError as exc:
            # Cut: the cause is kept in status (noVerdictCause, at most 1,024 characters).
            plan = planned(error=str(exc)[:900])
        else:
            plan = planned(outcome)
    return CanaryPass(plan, canary_events(plan, inputs.previous, candidate.name))


async def _analyze(
    canary: Canary, plan: CanaryPlan, *, namespace: str, deployment: str, allowed: Sequence[str] | None
) -> AnalysisOutcome:
    assert canary.analysis is not None
    async with aiohttp.ClientSession() as session:
        return await analyze(
            PrometheusClient(canary.analysis.prometheus_url, session, allowed=allowed),
            canary.analysis,
            canary=canary.canary_variant,
            stable=canary.stable_variant,
            window_s=plan.analysis_window_s,
            # The router labels its own series with its ModelDeployment (scrape-independent).
            labels={"namespace": namespace, "model_deployment": deployment},
        )
