"""End to end: router -> real Prometheus (Debian package) -> analysis -> state machine -> router config."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.router.fakes import FakeOpenAI, RouterHarness, start_router
from tests.support.polling import aeventually

from kubetune.analysis.prometheus import PrometheusClient
from kubetune.analysis.run import analyze
from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import Canary, CanaryAnalysis, CanaryStatus, ModelSource, Variant
from kubetune.api.routerconfig import RouterConfig, RouterVariant
from kubetune.devcluster.controlplane import free_port, terminate
from kubetune.planning.canary import CanaryOutcome, CanaryPlan, plan_canary
from kubetune.serving.synthetic import SyntheticLoad, generate

pytestmark = pytest.mark.slow

JOB = "kubetune-router"
CHAT = "/v1/chat/completions"


@contextlib.asynccontextmanager
async def prometheus(scrape_target: str, workdir: Path) -> AsyncIterator[str]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("prometheus is not installed: apt-get install -y prometheus (Debian package)")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    scrape_interval: 1s\n"
        f"    static_configs: [{{targets: ['{scrape_target}']}}]\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                assert process.poll() is None, (workdir / "prometheus.log").read_text()
                try:
                    async with session.get(url + "/-/ready") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await aeventually(ready, timeout=60, message="prometheus not ready")
        yield url
    finally:
        terminate(process)


async def drive_traffic(harness: RouterHarness, stop: asyncio.Event) -> None:
    """~40 user req/s split by the router's weights (a quarter streamed) plus synthetic canary fill."""
    users = itertools.count()

    async def user_request(index: int) -> None:
        body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "stream": index % 4 == 0}
        headers = {"x-user-id": f"user-{index}"}
        async with harness.session.post(
            harness.url + "/v1/chat/completions", json=body, headers=headers
        ) as r:
            await r.read()

    async def synthetic_request() -> None:
        body = {"model": "base", "messages": [{"role": "user", "content": "eval"}], "stream": True}
        headers = {"x-kubetune-variant": "canary", "x-kubetune-synthetic": "1"}
        async with harness.session.post(
            harness.url + "/v1/chat/completions", json=body, headers=headers
        ) as r:
            await r.read()

    tasks: set[asyncio.Task[None]] = set()

    def spawn(coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    while not stop.is_set():
        for _ in range(4):
            spawn(user_request(next(users)))
        spawn(synthetic_request())
        await asyncio.sleep(0.1)
    await asyncio.gather(*tasks, return_exceptions=True)


async def trickle_with_synthetic_fill(harness: RouterHarness, stop: asyncio.Event) -> None:
    """One user request every 2 s (never 20 in a 4 s window) plus the operator's synthetic generator."""
    load = SyntheticLoad(
        url=harness.url + "/v1",
        variants=("stable", "canary"),
        prompts=("eval one", "eval two"),
        requests_per_second=10,
    )
    generator = asyncio.create_task(generate(load, harness.session))
    try:
        await trickle(harness, stop)
    finally:
        generator.cancel()
        await asyncio.gather(generator, return_exceptions=True)


async def trickle(harness: RouterHarness, stop: asyncio.Event) -> None:
    index = 0
    while not stop.is_set():
        await harness.chat(headers={"x-user-id": f"user-{index}"})
        index += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=2)


async def run_canary(
    tmp_path: Path,
    canary_backend: FakeOpenAI,
    analysis: CanaryAnalysis,
    on_plan: Callable[[CanaryPlan], None],
    traffic: Callable[[RouterHarness, asyncio.Event], Coroutine[Any, Any, None]] = drive_traffic,
    deadline_s: float = 240,
) -> CanaryPlan:
    stable_backend = await FakeOpenAI("stable", latency_s=0.005).start()
    await canary_backend.start()
    spec = Canary(
        stable_variant="stable",
        canary_variant="canary",
        steps=[10, 25, 50, 100],
        interval="4s",
        failure_limit=2,
        analysis=analysis,
    )
    variants = (
        Variant(name="stable", model=ModelSource(uri="org/base")),
        Variant(name="canary", model=ModelSource(uri="org/base")),
    )

    def router_config(weights: dict[str, int]) -> RouterConfig:
        return RouterConfig(
            variants=(
                RouterVariant(name="stable", weight=weights["stable"], endpoints=(stable_backend.url,)),
                RouterVariant(name="canary", weight=weights["canary"], endpoints=(canary_backend.url,)),
            ),
            model_deployment="chat",
        )

    harness = await start_router(router_config({"stable": 100, "canary": 0}), tmp_path / "router.json")
    stop = asyncio.Event()
    driver = asyncio.create_task(traffic(harness, stop))
    try:
        async with prometheus(f"127.0.0.1:{harness.port}", tmp_path) as prom_url:
            client = PrometheusClient(prom_url, harness.session)
            status: CanaryStatus | None = None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + deadline_s
            last: CanaryPlan | None = None
            while True:
                if loop.time() > deadline:
                    assert last is not None, "no plan before the deadline"
                    return last
                now = datetime.now(UTC)
                args: dict[str, Any] = {"now": now, "canary_ready_replicas": 1, "shared_base": True}
                plan = plan_canary(spec, *variants, status, **args)
                if plan.analysis_due:
                    result = await analyze(
                        client,
                        analysis,
                        canary="canary",
                        stable="stable",
                        window_s=plan.analysis_window_s,
                        # As the operator filters: the router's own constant label.
                        labels={"job": JOB, "model_deployment": "chat"},
                    )
                    plan = plan_canary(spec, *variants, status, analysis=result, **args)
                on_plan(plan)
                if await harness.loaded_weights() != plan.weights:
                    harness.write_config(router_config(plan.weights))

                    async def applied(weights: dict[str, int] = plan.weights) -> bool:
                        return await harness.loaded_weights() == weights

                    await aeventually(applied, interval=0.05, message="router did not load the weights")
                status, last = plan.status, plan
                if plan.outcome is not CanaryOutcome.PROGRESSING:
                    return plan
                await asyncio.sleep(0.25)
    finally:
        stop.set()
        await driver
        await harness.close()
        await stable_backend.close()
        await canary_backend.close()


async def test_canary_with_20_percent_errors_rolls_back(tmp_path: Path) -> None:
    analysis = CanaryAnalysis(prometheus_url="http://unused", max_error_rate=0.01, min_requests=20)
    weights_seen: list[int] = []
    plan = await run_canary(
        tmp_path,
        FakeOpenAI("canary", fail_every=5, latency_s=0.005),
        analysis,
        lambda p: weights_seen.append(p.weights["canary"]),
    )
    assert plan.outcome is CanaryOutcome.ROLLED_BACK
    assert plan.weights == {"stable": 100, "canary": 0}
    assert max(weights_seen) == 10
    (failure,) = [r for r in plan.status.last_analysis if not r.passed]
    assert failure.metric == "errorRate"
    assert failure.value is not None
    # 20% injected; Prometheus' per-series extrapolation over a 4 s window on a loaded machine blurs it
    # (0.0999 seen), but never down to the 1% threshold.
    assert 0.05 <= failure.value <= 0.5
    assert failure.samples >= 20
    assert "kubetune_router_requests_total" in failure.query
    assert f"errorRate={failure.value:.4g} > 0.01" in plan.message
    assert failure.query in plan.message


async def test_healthy_canary_promotes_through_all_steps(tmp_path: Path) -> None:
    analysis = CanaryAnalysis(
        prometheus_url="http://unused",
        max_error_rate=0.01,
        max_p95_latency_ms=2000,
        max_ttft_p95_ms=2000,
        min_requests=20,
        relative=True,
        relative_tolerance=10,
    )
    weights_seen: list[int] = []
    plan = await run_canary(
        tmp_path,
        FakeOpenAI("canary", latency_s=0.005),
        analysis,
        lambda p: weights_seen.append(p.weights["canary"]),
    )
    assert plan.outcome is CanaryOutcome.PROMOTED
    assert sorted(set(weights_seen)) == [10, 25, 50, 100]
    assert plan.weights == {"stable": 0, "canary": 100}
    checked = {r.metric for r in plan.status.last_analysis}
    assert {"errorRate", "p95LatencyMs", "ttftP95Ms"} <= checked
    assert all(r.passed and r.samples >= 20 for r in plan.status.last_analysis if r.metric == "errorRate")


LOW_TRAFFIC = CanaryAnalysis(prometheus_url="http://unused", max_error_rate=0.01, min_requests=20)


async def test_low_traffic_canary_waits_for_samples_then_stalls(tmp_path: Path) -> None:
    """The control for the next test: a trickle of users alone never gives a verdict, so after
    `noVerdictLimit` intervals the canary pauses at its weight (never promotes, never hangs silently)."""
    plans: list[CanaryPlan] = []
    plan = await run_canary(
        tmp_path, FakeOpenAI("canary", latency_s=0.005), LOW_TRAFFIC, plans.append, trickle, deadline_s=20
    )
    assert plan.outcome is CanaryOutcome.PAUSED
    assert plan.reason is Reason.ANALYSIS_STALLED
    assert plan.weights == {"stable": 90, "canary": 10}
    waiting = [p for p in plans if "of 20 requests for a verdict" in p.message]
    assert waiting, [p.message for p in plans]
    assert plan.status.no_verdict >= LOW_TRAFFIC.no_verdict_limit


async def test_synthetic_traffic_fills_a_low_traffic_canary_to_promotion(tmp_path: Path) -> None:
    canary_backend = FakeOpenAI("canary", latency_s=0.005)
    weights_seen: list[int] = []
    plan = await run_canary(
        tmp_path,
        canary_backend,
        LOW_TRAFFIC,
        lambda p: weights_seen.append(p.weights["canary"]),
        trickle_with_synthetic_fill,
    )
    assert plan.outcome is CanaryOutcome.PROMOTED, plan.message
    assert sorted(set(weights_seen)) == [10, 25, 50, 100]
    (error_rate,) = [r for r in plan.status.last_analysis if r.metric == "errorRate"]
    assert error_rate.samples >= 20
    # The samples came from the held-out prompts, pinned and marked by the generator.
    synthetic = [r for r in canary_backend.requests if r["body"]["messages"][0]["content"].startswith("eval")]
    assert len(synthetic) >= 20
    assert all(r["body"]["stream"] is True for r in synthetic)
