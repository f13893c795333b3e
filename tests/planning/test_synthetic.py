"""When the operator sends synthetic canary traffic, and what it sends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.serving.objects import model_deployment

from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import CanaryStatus, ModelDeploymentSpec
from kubetune.planning.canary import CanaryOutcome, CanaryPlan
from kubetune.planning.synthetic import SYNTHETIC_URL_ANNOTATION, desired_load
from kubetune.reconcile.modeldeployment import ModelDeploymentReconciler
from kubetune.serving.smoke import DEFAULT_PROMPTS
from kubetune.serving.synthetic import SyntheticLoad, request_body, request_headers
from kubetune.settings import SMOKE_URL_OVERRIDE_ENV, OperatorSettings

URI = {"uri": "pvc://models/base"}


def mdep(synthetic: dict[str, Any] | None = None, provider: str = "router", **smoke: Any) -> dict[str, Any]:
    analysis: dict[str, Any] = {"prometheusUrl": "http://prom:9090"}
    if synthetic is not None:
        analysis["syntheticTraffic"] = synthetic
    return model_deployment(
        [{"name": "stable", "model": URI}, {"name": "canary", "model": URI}],
        traffic={
            "provider": provider,
            "canary": {"stableVariant": "stable", "canaryVariant": "canary", "analysis": analysis},
        },
        smokeTest=smoke,
    )


def plan(outcome: CanaryOutcome = CanaryOutcome.PROGRESSING, weight: int = 10) -> CanaryPlan:
    return CanaryPlan(
        status=CanaryStatus(step=1, weight=weight),
        weights={"stable": 100 - weight, "canary": weight},
        replicas={},
        outcome=outcome,
        reason=Reason.CANARY_STEP,
        message="",
    )


ON = {"enabled": True, "requestsPerSecond": 2.5}


@pytest.mark.parametrize(
    ("obj", "canary_plan", "sends"),
    [
        (mdep(ON), plan(), True),
        (mdep(None), plan(), False),
        (mdep({"enabled": False}), plan(), False),
        (mdep(ON, provider="gateway-api"), plan(), False),
        (mdep(ON), plan(weight=0), False),
        (mdep(ON), plan(CanaryOutcome.PAUSED), False),
        (mdep(ON), plan(CanaryOutcome.PROMOTED, 100), False),
        (mdep(ON), plan(CanaryOutcome.ROLLED_BACK, 0), False),
        (mdep(ON), None, False),
    ],
)
def test_synthetic_traffic_only_while_a_canary_is_analysed(
    obj: dict[str, Any], canary_plan: CanaryPlan | None, sends: bool
) -> None:
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    assert (desired_load(obj, spec, canary_plan, ()) is not None) is sends


def test_load_targets_the_router_with_held_out_prompts_at_the_configured_rate() -> None:
    obj = mdep(ON)
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    load = desired_load(obj, spec, plan(), ("held out 1", "held out 2"))
    assert load == SyntheticLoad(
        url="http://chat-router.ml.svc:8080/v1",
        variants=("stable", "canary"),
        prompts=("held out 1", "held out 2"),
        requests_per_second=2.5,
        max_tokens=128,
    )
    without_job = desired_load(obj, spec, plan(), ())
    assert without_job is not None
    assert without_job.prompts == DEFAULT_PROMPTS
    custom = mdep(ON, prompts=["smoke prompt"], maxTokens=16)
    load = desired_load(custom, ModelDeploymentSpec.model_validate(custom["spec"]), plan(), ())
    assert load is not None
    assert (load.prompts, load.max_tokens) == (("smoke prompt",), 16)


def test_url_annotation_is_honoured_only_where_the_operator_allows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    obj = mdep(ON)
    obj["metadata"]["annotations"] = {SYNTHETIC_URL_ANNOTATION: "http://127.0.0.1:9/v1"}
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    monkeypatch.delenv(SMOKE_URL_OVERRIDE_ENV, raising=False)
    allowed = OperatorSettings.from_env().allow_url_overrides
    load = desired_load(obj, spec, plan(), (), allow_url_override=allowed)
    assert load is not None
    assert load.url == "http://chat-router.ml.svc:8080/v1"
    monkeypatch.setenv(SMOKE_URL_OVERRIDE_ENV, "allow")
    allowed = OperatorSettings.from_env().allow_url_overrides
    load = desired_load(obj, spec, plan(), (), allow_url_override=allowed)
    assert load is not None
    assert load.url == "http://127.0.0.1:9/v1"


def test_requests_are_pinned_marked_and_streamed() -> None:
    load = SyntheticLoad(
        url="http://r/v1", variants=("a",), prompts=("p",), requests_per_second=1, max_tokens=8
    )
    assert request_headers("canary") == {"x-kubetune-variant": "canary", "x-kubetune-synthetic": "1"}
    assert request_headers("canary", "t0k") == {
        "x-kubetune-variant": "canary",
        "x-kubetune-synthetic": "1",
        "x-kubetune-token": "t0k",
    }
    assert request_body(load, "canary", "p") == {
        "model": "canary",
        "messages": [{"role": "user", "content": "p"}],
        "max_tokens": 8,
        "stream": True,
    }
    assert load.max_in_flight == 10


async def test_a_deleted_model_deployment_stops_its_generator_and_smoke_tests() -> None:
    reconciler = ModelDeploymentReconciler(OperatorSettings())
    synthetic, smoke = reconciler.synthetic, reconciler.smoke
    load = SyntheticLoad(url="http://127.0.0.1:9/v1", variants=("a",), prompts=("p",), requests_per_second=1)
    synthetic.ensure("uid-1", load)
    synthetic.ensure("uid-1", load)  # a repeated pass keeps the running generator
    generator = synthetic._generators["uid-1"][1]
    assert synthetic.active("uid-1") == load
    never = asyncio.get_running_loop().create_future()
    smoke._tasks[("uid-1", "a")] = ("key", asyncio.ensure_future(never))
    assert smoke.running("uid-1")
    reconciler.forget("uid-1")
    assert synthetic.active("uid-1") is None
    assert not smoke.running("uid-1")
    await asyncio.sleep(0)
    assert generator.cancelled() or generator.done()
    assert never.cancelled()


def test_the_load_carries_the_routers_token_and_never_shows_it() -> None:
    obj = mdep(ON)
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    load = desired_load(obj, spec, plan(), (), token="s3cret-value")
    assert load is not None
    assert load.token == "s3cret-value"
    assert "s3cret-value" not in repr(load)
