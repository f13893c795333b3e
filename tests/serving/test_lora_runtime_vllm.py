"""Runtime LoRA loading against the real vLLM server (CPU build), started with the command and env our
builder renders for a variant with a static adapter and an adapter that follows a FineTuneSchedule.

Two revisions of the followed adapter are trained offline to give different answers, so a completion
shows which revision answered. The server is never restarted: revisions come and go through
sync_pod_adapters while the static adapter keeps answering.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.serving.conftest import ADAPTER_NAME, BASE_NAME
from tests.serving.lora_adapter import FACTS, train_memorising_adapter
from tests.serving.objects import model_deployment
from tests.serving.vllm_server import VllmServer, local_command, local_path, start_server

from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.builders.modeldeployment import build_variant_children
from kubetune.builders.vllm import RUNTIME_LORA_ENV, runtime_adapter_path
from kubetune.devcluster.controlplane import free_port
from kubetune.serving.lora_runtime import ManagedAdapters, sync_pod_adapters, versioned_adapter_name
from kubetune.serving.resolution import FollowedAdapter, LoraModule, Resolution, ResolutionState

pytestmark = pytest.mark.slow

FOLLOWED = "a"
SCHEDULE_OUTPUT = "pvc://runs/sched"
QUESTION = FACTS[0][0]
# Each revision memorises a different answer to the same questions: the reply names the revision.
REVISION_FACTS = {
    "r1": FACTS,
    "r2": tuple((question, f"Not {answer}") for question, answer in FACTS),
}
TIMEOUT = aiohttp.ClientTimeout(total=300)
VARIANT: dict[str, Any] = {
    "name": BASE_NAME,
    "model": {"uri": "pvc://models/tiny"},
    "adapters": [
        {"name": ADAPTER_NAME, "uri": "pvc://adapters/sft"},
        {"name": FOLLOWED, "finetuneScheduleRef": {"name": "sched"}},
    ],
    "weight": 100,
    "vllm": {"maxModelLen": 512, "dtype": "float32", "maxNumSeqs": 16},
}
FOLLOWED_ADAPTER = FollowedAdapter(FOLLOWED, SCHEDULE_OUTPUT, rank=16)
MANAGED = ManagedAdapters.following([FOLLOWED], static=[ADAPTER_NAME])


def revision_uri(run: str) -> str:
    """Where the run's FineTuneJob publishes its adapter (its own folder under the schedule's output)."""
    return f"{SCHEDULE_OUTPUT}/{run}/adapter"


@pytest.fixture(scope="module")
def runs_root(model_layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The schedule's output claim: one adapter folder per run. r1 memorised FACTS, like the session's
    static adapter: a copy of it (one training less)."""
    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(model_layout / "adapters" / ADAPTER_NAME, root / "r1" / "adapter")
    train_memorising_adapter(model_layout / "base", root / "r2" / "adapter", facts=REVISION_FACTS["r2"])
    return root


@pytest.fixture(scope="module")
def runtime_container() -> dict[str, Any]:
    mdep = model_deployment([VARIANT])
    variant = ModelDeploymentSpec.model_validate(mdep["spec"]).variants[0]
    resolution = Resolution(
        ResolutionState.READY,
        Reason.MODEL_RESOLVED,
        "",
        model_uri="pvc://models/tiny",
        lora_modules=(LoraModule(ADAPTER_NAME, "pvc://adapters/sft", 16),),
        followed_adapters=(FOLLOWED_ADAPTER,),
    )
    deployment = build_variant_children(mdep, variant, resolution)[0]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.fixture(scope="module")
def pod_paths(model_layout: Path, runs_root: Path, runtime_container: dict[str, Any]) -> dict[str, Path]:
    """The pod's mounts, made local: the followed root first (it lies under /models)."""
    mounts = {m["mountPath"] for m in runtime_container["volumeMounts"]}
    followed_mount = f"/models/followed/{FOLLOWED}"
    assert followed_mount in mounts
    return {followed_mount: runs_root, "/models": model_layout}


@pytest.fixture(scope="module")
def runtime_server(
    vllm_python: Path,
    runtime_container: dict[str, Any],
    pod_paths: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VllmServer]:
    work = tmp_path_factory.mktemp("vllm-runtime")
    port = free_port()
    argv, env = local_command(
        runtime_container, python=vllm_python, paths={**pod_paths, "/cache": work / "cache"}, port=port
    )
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    server = start_server(argv, env, port=port, log=work / "vllm.log")
    try:
        yield server
    finally:
        server.stop()


def desired(runs: list[str], paths: dict[str, Path]) -> dict[str, str]:
    """What the operator would ask for (versioned name → in-pod path), made local for this server."""
    return {
        versioned_adapter_name(FOLLOWED, run): local_path(
            runtime_adapter_path(FOLLOWED_ADAPTER, revision_uri(run)), paths
        )
        for run in runs
    }


async def chat(server: VllmServer, model: str) -> tuple[int, str]:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 16,
        "temperature": 0,
    }
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(f"{server.base_url}/v1/chat/completions", json=payload) as response,
    ):
        body = await response.json(content_type=None)
    if response.status != 200:
        return response.status, ""
    return 200, str(body["choices"][0]["message"]["content"]).strip()


def test_rendered_container_enables_runtime_loading(runtime_container: dict[str, Any]) -> None:
    env = {e["name"]: e.get("value") for e in runtime_container["env"]}
    assert env[RUNTIME_LORA_ENV] == "True"
    args = runtime_container["args"]
    assert "--enable-lora" in args
    # One static adapter and two revisions of the followed one.
    assert args[args.index("--max-loras") + 1] == "3"


# Its setup trains an adapter and starts a second vLLM server: minutes on two busy cores.
@pytest.mark.timeout(1800)
async def test_revisions_come_and_go_without_a_restart(
    runtime_server: VllmServer, pod_paths: dict[str, Path]
) -> None:
    pid = runtime_server.process.pid
    r1, r2 = (versioned_adapter_name(FOLLOWED, run) for run in ("r1", "r2"))
    assert (r1, r2) == ("a-r1", "a-r2")
    url = runtime_server.base_url

    first = await sync_pod_adapters(url, desired(["r1"], pod_paths), managed=MANAGED)
    assert first.in_sync, first
    assert first.loaded_now == (r1,)
    assert set(first.loaded) == {r1}
    assert await chat(runtime_server, r1) == (200, FACTS[0][1])

    both = await sync_pod_adapters(url, desired(["r1", "r2"], pod_paths), managed=MANAGED)
    assert both.in_sync, both
    assert both.loaded_now == (r2,)
    assert set(both.loaded) == {r1, r2}
    assert await chat(runtime_server, r1) == (200, FACTS[0][1])
    assert await chat(runtime_server, r2) == (200, REVISION_FACTS["r2"][0][1])

    promoted = await sync_pod_adapters(url, desired(["r2"], pod_paths), managed=MANAGED)
    assert promoted.in_sync, promoted
    assert promoted.unloaded_now == (r1,)
    assert set(promoted.loaded) == {r2}
    status, _ = await chat(runtime_server, r1)
    assert status == 404
    assert await chat(runtime_server, r2) == (200, REVISION_FACTS["r2"][0][1])
    # The startup adapter is not the operator's to unload: still there and answering.
    assert await chat(runtime_server, ADAPTER_NAME) == (200, FACTS[0][1])

    again = await sync_pod_adapters(url, desired(["r2"], pod_paths), managed=MANAGED)
    assert again.in_sync, again
    assert (again.loaded_now, again.unloaded_now) == ((), ())
    assert again.loaded == promoted.loaded

    # r2's name with r1's content: refused, and r2 keeps answering with its own weights.
    stale = {r2: desired(["r1"], pod_paths)[r1]}
    refused = await sync_pod_adapters(url, stale, managed=MANAGED)
    assert set(refused.failed) == {r2}
    assert "new name" in refused.failed[r2]
    assert refused.loaded_now == ()
    assert await chat(runtime_server, r2) == (200, REVISION_FACTS["r2"][0][1])

    assert runtime_server.process.poll() is None
    assert runtime_server.process.pid == pid


async def test_a_missing_adapter_folder_fails_by_name(
    runtime_server: VllmServer, pod_paths: dict[str, Path]
) -> None:
    name = versioned_adapter_name(FOLLOWED, "r9")
    wanted = {name: local_path(runtime_adapter_path(FOLLOWED_ADAPTER, revision_uri("r9")), pod_paths)}
    result = await sync_pod_adapters(runtime_server.base_url, wanted, managed=MANAGED)
    assert set(result.failed) == {name}
    assert result.failed[name].startswith("load")
    assert name not in result.loaded
