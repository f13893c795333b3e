"""Runtime LoRA sync: the pure planner as a table, and the client against a local vLLM stand-in that
misbehaves (redirects, endless lists, errors with bodies that must not be repeated, slow answers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from tests.support.local_http import serving

from kubetune.api.conditions import Reason
from kubetune.serving.lora_runtime import (
    AdapterSyncPlan,
    ManagedAdapters,
    loaded_adapters,
    plan_adapter_sync,
    revision_adapters,
    sync_pod_adapters,
    versioned_adapter_name,
)
from kubetune.serving.resolution import FollowedAdapter, LoraModule, Resolution, ResolutionState

MANAGED = ManagedAdapters.following(["a", "b"], static=["sft", "a-static"])
SECRET = "s3cr3t-remote-body"


# --- names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "managed"),
    [
        ("a-r1", True),
        ("b-sched-29000000", True),
        ("a-", False),  # the prefix alone is no revision
        ("a", False),
        ("sft", False),
        ("a-static", False),  # loaded at startup, even though it looks like a revision
        ("ab-r1", False),
        ("c-r1", False),
    ],
)
def test_managed_names(name: str, managed: bool) -> None:
    assert (name in MANAGED) is managed


def test_versioned_names_are_dns_labels() -> None:
    assert versioned_adapter_name("a", "sched-29000000") == "a-sched-29000000"
    long = versioned_adapter_name("x" * 40, "y" * 40)
    assert len(long) <= 63
    assert long.startswith("x")
    assert long != versioned_adapter_name("x" * 40, "y" * 39 + "z")


# --- the planner ------------------------------------------------------------------------------------

P1, P2, P3 = "/models/followed/a/r1/adapter", "/models/followed/a/r2/adapter", "/models/followed/b/r1/adapter"
STATIC = {"sft": "/models/adapters/sft", "a-static": "/models/adapters/a-static"}


@pytest.mark.parametrize(
    ("loaded", "desired", "expected"),
    [
        pytest.param({}, {}, AdapterSyncPlan(), id="nothing"),
        pytest.param(STATIC, {}, AdapterSyncPlan(), id="static adapters are left alone"),
        pytest.param(STATIC, {"a-r1": P1}, AdapterSyncPlan(to_load={"a-r1": P1}), id="first revision"),
        pytest.param(
            {**STATIC, "a-r1": P1},
            {"a-r1": P1, "a-r2": P2},
            AdapterSyncPlan(to_load={"a-r2": P2}),
            id="challenger beside the serving revision",
        ),
        pytest.param(
            {**STATIC, "a-r1": P1, "a-r2": P2},
            {"a-r2": P2},
            AdapterSyncPlan(to_unload=("a-r1",)),
            id="old revision goes after promotion",
        ),
        pytest.param(
            {"a-r1": P1, "a-r2": P2}, {"a-r1": P1, "a-r2": P2}, AdapterSyncPlan(), id="in sync: no calls"
        ),
        pytest.param(
            {"a-r1": P1, "b-r1": P3, "other": "/x"},
            {},
            AdapterSyncPlan(to_unload=("a-r1", "b-r1")),
            id="unmanaged names survive an empty desire",
        ),
        pytest.param(
            {"a-r1": P1},
            {"a-r1": P2},
            AdapterSyncPlan(
                conflicts={"a-r1": f"already loaded from {P1}; new content needs a new name"},
            ),
            id="same name, new path: refused, never reloaded",
        ),
        pytest.param(
            {"a-r1": P1},
            {"a-r1": P2, "a-r2": P2},
            AdapterSyncPlan(
                to_load={"a-r2": P2},
                conflicts={"a-r1": f"already loaded from {P1}; new content needs a new name"},
            ),
            id="a conflict does not hold back the other names",
        ),
        pytest.param(
            STATIC,
            {"sft": "/elsewhere", "c-r1": "/c"},
            AdapterSyncPlan(
                conflicts={
                    "c-r1": "not a name the operator manages (static or outside the followed prefixes)",
                    "sft": "not a name the operator manages (static or outside the followed prefixes)",
                },
            ),
            id="unmanaged desires are refused",
        ),
        pytest.param(
            {"b-r1": P3},
            {"a-r2": P2, "a-r1": P1},
            AdapterSyncPlan(to_load={"a-r1": P1, "a-r2": P2}, to_unload=("b-r1",)),
            id="several at once, in name order",
        ),
    ],
)
def test_plan(loaded: dict[str, str], desired: dict[str, str], expected: AdapterSyncPlan) -> None:
    plan = plan_adapter_sync(loaded, desired, MANAGED)
    assert plan == expected
    assert list(plan.to_load) == sorted(plan.to_load)


def test_plan_is_a_fixpoint_once_applied() -> None:
    loaded = {**STATIC, "a-r1": P1, "b-r1": P3}
    desired = {"a-r2": P2, "b-r1": P3}
    plan = plan_adapter_sync(loaded, desired, MANAGED)
    after = {n: p for n, p in loaded.items() if n not in plan.to_unload} | plan.to_load
    assert plan_adapter_sync(after, desired, MANAGED).empty


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "object": "list",
                "data": [
                    {"id": "tiny", "root": "/models/base", "parent": None},
                    {"id": "sft", "root": "/models/adapters/sft", "parent": "tiny"},
                ],
            },
            {"sft": "/models/adapters/sft"},
        ),
        ({"data": []}, {}),
    ],
)
def test_loaded_adapters(body: Any, expected: dict[str, str]) -> None:
    assert loaded_adapters(body) == expected


@pytest.mark.parametrize("body", [[], {"data": {}}, {"data": ["x"]}, "text", None])
def test_loaded_adapters_refuses_what_is_not_a_model_list(body: Any) -> None:
    with pytest.raises(ValueError, match="not a model list"):
        loaded_adapters(body)


# --- the client against a stand-in ------------------------------------------------------------------

Handler = Callable[[web.Request], Any]


@dataclass
class StandIn:
    """vLLM's runtime LoRA API as far as the sync uses it, with hooks to misbehave per path."""

    url: str = ""
    adapters: dict[str, str] = field(default_factory=lambda: dict(STATIC))
    calls: list[tuple[str, str]] = field(default_factory=list)
    override: dict[str, Handler] = field(default_factory=dict)

    def models_body(self) -> dict[str, Any]:
        cards = [{"id": "tiny", "root": "/models/base", "parent": None}]
        cards += [{"id": n, "root": p, "parent": "tiny"} for n, p in self.adapters.items()]
        return {"object": "list", "data": cards}


def vllm_error(status: int) -> web.Response:
    return web.json_response({"error": {"message": SECRET, "type": "Error", "code": status}}, status=status)


@pytest.fixture
async def pod() -> AsyncIterator[StandIn]:
    state = StandIn()

    async def models(request: web.Request) -> web.StreamResponse:
        if "models" in state.override:
            return await state.override["models"](request)  # type: ignore[no-any-return]
        return web.json_response(state.models_body())

    async def load(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state.calls.append(("load", body["lora_name"]))
        if "load" in state.override:
            return await state.override["load"](request)  # type: ignore[no-any-return]
        if body["lora_name"] in state.adapters:
            return vllm_error(400)
        if "missing" in body["lora_path"]:
            return vllm_error(404)
        state.adapters[body["lora_name"]] = body["lora_path"]
        return web.Response(text=f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def unload(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state.calls.append(("unload", body["lora_name"]))
        if "unload" in state.override:
            return await state.override["unload"](request)  # type: ignore[no-any-return]
        if state.adapters.pop(body["lora_name"], None) is None:
            return vllm_error(404)
        return web.Response(text="Success")

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/load_lora_adapter", load)
    app.router.add_post("/v1/unload_lora_adapter", unload)
    app.router.add_route("*", "/elsewhere", lambda _: web.json_response({"data": []}))
    async with serving(app) as url:
        state.url = url
        yield state


async def test_sync_loads_then_unloads_and_reads_back(pod: StandIn) -> None:
    pod.adapters["a-r1"] = P1
    result = await sync_pod_adapters(pod.url, {"a-r2": P2}, managed=MANAGED)
    assert result.in_sync
    assert pod.calls == [("load", "a-r2"), ("unload", "a-r1")]
    assert (result.loaded_now, result.unloaded_now) == (("a-r2",), ("a-r1",))
    assert result.loaded == {"a-r2": P2}
    assert pod.adapters == {**STATIC, "a-r2": P2}


async def test_a_second_sync_makes_no_calls(pod: StandIn) -> None:
    await sync_pod_adapters(pod.url, {"a-r1": P1}, managed=MANAGED)
    pod.calls.clear()
    result = await sync_pod_adapters(pod.url, {"a-r1": P1}, managed=MANAGED)
    assert pod.calls == []
    assert result.in_sync
    assert result.loaded == {"a-r1": P1}


async def test_loaded_meanwhile_counts_as_done(pod: StandIn) -> None:
    """Another pass loaded the name between our read and our load: vLLM answers 400, the read-back
    shows it at the wanted path."""

    async def race(request: web.Request) -> web.Response:
        body = await request.json()
        pod.adapters[body["lora_name"]] = body["lora_path"]
        return vllm_error(400)

    pod.override["load"] = race
    result = await sync_pod_adapters(pod.url, {"a-r1": P1}, managed=MANAGED)
    assert result.in_sync, result
    assert result.loaded == {"a-r1": P1}


async def test_unloaded_meanwhile_counts_as_done(pod: StandIn) -> None:
    pod.adapters["a-r1"] = P1

    async def gone(request: web.Request) -> web.Response:
        pod.adapters.pop("a-r1")
        return vllm_error(404)

    pod.override["unload"] = gone
    result = await sync_pod_adapters(pod.url, {}, managed=MANAGED)
    assert result.in_sync, result
    assert result.unloaded_now == ("a-r1",)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (404, "load: HTTP 404 Not Found (no adapter at /missing/r1, or runtime loading is off)"),
        (500, "load: HTTP 500 Internal Server Error"),
        (507, "load: HTTP 507 Insufficient Storage"),
        (599, "load: HTTP 599 unexpected status"),
    ],
)
async def test_load_errors_are_ours_never_the_pods_body(pod: StandIn, status: int, reason: str) -> None:
    pod.override["load"] = lambda _: _async(vllm_error(status))
    result = await sync_pod_adapters(pod.url, {"a-r1": "/missing/r1", "a-r2": P2}, managed=MANAGED)
    assert result.failed == {"a-r1": reason, "a-r2": reason.replace("/missing/r1", P2)}
    assert SECRET not in repr(result)
    assert result.loaded == {}


async def test_a_failed_load_does_not_stop_the_unloads(pod: StandIn) -> None:
    pod.adapters["b-r1"] = P3
    pod.override["load"] = lambda _: _async(vllm_error(500))
    result = await sync_pod_adapters(pod.url, {"a-r1": P1}, managed=MANAGED)
    assert set(result.failed) == {"a-r1"}
    assert result.unloaded_now == ("b-r1",)


async def test_unload_error(pod: StandIn) -> None:
    pod.adapters["a-r1"] = P1
    pod.override["unload"] = lambda _: _async(vllm_error(503))
    result = await sync_pod_adapters(pod.url, {}, managed=MANAGED)
    assert result.failed == {"a-r1": "unload: HTTP 503 Service Unavailable"}
    assert result.loaded == {"a-r1": P1}


async def test_redirects_are_not_followed(pod: StandIn) -> None:
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    pod.override["load"] = redirect
    result = await sync_pod_adapters(pod.url, {"a-r1": P1}, managed=MANAGED)
    assert result.failed == {"a-r1": "load: HTTP 307: redirect not followed"}
    # The models list is read from the pod itself, never from where it points.
    pod.override["models"] = redirect
    listed = await sync_pod_adapters(pod.url, {"a-r1": P1}, managed=MANAGED)
    assert listed.error == "HTTP 307: redirect not followed"
    assert pod.calls == [("load", "a-r1")]


async def test_a_huge_model_list_is_given_up(pod: StandIn) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b" " * 65536)
        return response

    pod.override["models"] = endless
    result = await sync_pod_adapters(pod.url, {"a-r1": P1}, managed=MANAGED)
    assert result.error is not None
    assert "cap" in result.error
    assert pod.calls == []


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda: vllm_error(500), "/v1/models: HTTP 500 Internal Server Error"),
        (lambda: web.Response(text=SECRET), "/v1/models: not an OpenAI model list"),
        (lambda: web.json_response({"data": SECRET}), "/v1/models: not an OpenAI model list"),
    ],
)
async def test_an_unreadable_model_list_changes_nothing(
    pod: StandIn, answer: Callable[[], web.Response], error: str
) -> None:
    pod.adapters["a-r1"] = P1
    pod.override["models"] = lambda _: _async(answer())
    result = await sync_pod_adapters(pod.url, {}, managed=MANAGED)
    assert result.error == error
    assert pod.calls == []
    assert not result.in_sync


async def test_a_slow_pod_times_out(pod: StandIn) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response(pod.models_body())

    pod.override["models"] = slow
    result = await sync_pod_adapters(pod.url, {"a-r1": P1}, managed=MANAGED, timeout_s=0.2)
    assert result.error == "timed out"


async def test_an_unreachable_pod() -> None:
    result = await sync_pod_adapters("http://127.0.0.1:9", {"a-r1": P1}, managed=MANAGED, timeout_s=2)
    assert result.error is not None
    assert result.error.startswith("request failed")


async def _async(response: web.Response) -> web.Response:
    return response


def test_revision_adapters() -> None:
    followed = FollowedAdapter("a", "pvc://runs/sched", rank=16)
    runs = {"sched-2": "pvc://runs/sched/sched-2/adapter", "sched-1": "pvc://runs/sched/sched-1/adapter"}
    assert revision_adapters(followed, runs) == {
        "a-sched-1": "/models/followed/a/sched-1/adapter",
        "a-sched-2": "/models/followed/a/sched-2/adapter",
    }
    with pytest.raises(ValueError, match="not a folder under"):
        revision_adapters(followed, {"x": "pvc://other/sched/x"})


def test_managed_adapters_of_a_resolution() -> None:
    resolution = Resolution(
        ResolutionState.READY,
        Reason.MODEL_RESOLVED,
        "",
        model_uri="pvc://m/base",
        lora_modules=(LoraModule("a-static", "pvc://m/s"),),
        followed_adapters=(FollowedAdapter("a", "pvc://runs/a"), FollowedAdapter("b", "pvc://runs/b")),
    )
    assert ManagedAdapters.of(resolution) == ManagedAdapters(("a-", "b-"), frozenset({"a-static"}))
