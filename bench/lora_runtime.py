"""A new adapter revision in a running vLLM server (runtime LoRA loading) vs. a pod restart with it static.

Both on the real vLLM CPU build with the tiny test model (random Qwen2, 2 layers) and PEFT adapters
trained offline, each server started with the container command and env our builder renders:

- runtime: one server with a followed adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True). Per round, a
  new versioned name is loaded through `sync_pod_adapters` (the operator's client), the first chat
  completion under it is sent, and the previous name is unloaded. Timed: the sync that loads, the
  first completion, and the sync that unloads;
- restart: what serving the revision as a `--lora-modules` adapter costs instead, i.e. a new pod: a
  fresh server process with the adapter static and an empty compile cache (a pod's /cache is an
  emptyDir), timed from exec to /health and to the first completion under the adapter's name.

Kubernetes adds scheduling, image start and probe periods to the restart (seconds to minutes), and
GPU servers load weights for longer than this tiny model: the restart figure is a lower bound.

    PYTHONPATH=operator .venv/bin/python bench/lora_runtime.py [--rounds 5]

Needs the CPU vLLM venv (`make vllm-env`). Last line:
`lora_runtime: load_s=<median> first_completion_s=<median> restart_to_first_completion_s=<s>`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
# The serving tests' helpers: the same tiny model, adapters and server start as the real-vLLM tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import aiohttp
from tests.serving.lora_adapter import FACTS, train_memorising_adapter
from tests.serving.objects import model_deployment
from tests.serving.vllm_server import VllmServer, local_command, local_path, start_server, vllm_venv

from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.builders.modeldeployment import build_variant_children
from kubetune.builders.vllm import runtime_adapter_path
from kubetune.devcluster.controlplane import free_port
from kubetune.devcluster.tinymodel import create_tiny_model
from kubetune.serving.lora_runtime import ManagedAdapters, sync_pod_adapters, versioned_adapter_name
from kubetune.serving.resolution import FollowedAdapter, LoraModule, Resolution, ResolutionState

OUTPUT = "pvc://runs/sched"
FOLLOWED = FollowedAdapter("a", OUTPUT, rank=16)
MANAGED = ManagedAdapters.following(["a"])
VARIANT: dict[str, Any] = {
    "name": "tiny",
    "model": {"uri": "pvc://models/tiny"},
    "weight": 100,
    "vllm": {"maxModelLen": 512, "dtype": "float32", "maxNumSeqs": 16},
}


def container(resolution: Resolution) -> dict[str, Any]:
    mdep = model_deployment([VARIANT])
    variant = ModelDeploymentSpec.model_validate(mdep["spec"]).variants[0]
    rendered: dict[str, Any] = build_variant_children(mdep, variant, resolution)[0]["spec"]["template"][
        "spec"
    ]["containers"][0]
    return rendered


def resolution(static: tuple[LoraModule, ...] = (), followed: tuple[FollowedAdapter, ...] = ()) -> Resolution:
    return Resolution(
        ResolutionState.READY,
        Reason.MODEL_RESOLVED,
        "",
        model_uri="pvc://models/tiny",
        lora_modules=static,
        followed_adapters=followed,
    )


def start(rendered: dict[str, Any], paths: dict[str, Path], work: Path) -> VllmServer:
    work.mkdir(parents=True)
    port = free_port()
    argv, env = local_command(
        rendered,
        python=vllm_venv() / "bin" / "python",
        paths={**paths, "/cache": work / "cache"},
        port=port,
    )
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    return start_server(argv, env, port=port, log=work / "vllm.log")


async def first_completion(session: aiohttp.ClientSession, server: VllmServer, model: str) -> float:
    """Seconds until a chat completion under `model` succeeds (retried while the name is unknown)."""
    began = time.monotonic()
    payload = {"model": model, "messages": [{"role": "user", "content": FACTS[0][0]}], "max_tokens": 8}
    while True:
        async with session.post(f"{server.base_url}/v1/chat/completions", json=payload) as response:
            await response.read()
            if response.status == 200:
                return time.monotonic() - began
            if time.monotonic() - began > 300:
                raise RuntimeError(f"{model}: HTTP {response.status} for 300 s")
        await asyncio.sleep(0.05)


async def runtime_rounds(
    server: VllmServer, paths: dict[str, Path], runs: list[str], rounds: int
) -> list[dict[str, float]]:
    figures = []
    previous: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        for i in range(rounds):
            run = runs[i % len(runs)]
            # A new name each round, as each revision gets one (the same folder may come back under another).
            name = versioned_adapter_name("a", f"{run}-{i}")
            path = local_path(runtime_adapter_path(FOLLOWED, f"{OUTPUT}/{run}/adapter"), paths)
            began = time.monotonic()
            loaded = await sync_pod_adapters(server.base_url, previous | {name: path}, managed=MANAGED)
            load_s = time.monotonic() - began
            assert loaded.in_sync, loaded
            assert loaded.loaded_now == (name,), loaded
            completion_s = await first_completion(session, server, name)
            began = time.monotonic()
            unloaded = await sync_pod_adapters(server.base_url, {name: path}, managed=MANAGED)
            unload_s = time.monotonic() - began
            assert unloaded.in_sync, unloaded
            previous = {name: path}
            figures.append({"load_s": load_s, "first_completion_s": completion_s, "unload_s": unload_s})
    return figures


async def restart(paths: dict[str, Path], work: Path) -> dict[str, float]:
    static = LoraModule("a-r2", f"{OUTPUT}/r2/adapter", 16)
    rendered = container(resolution(static=(static,)))
    # The static adapter's pod path is /models/adapters/<name>: point it at the run's folder.
    began = time.monotonic()
    server = start(
        rendered, {"/models/adapters/a-r2": paths["/models/followed/a"] / "r2" / "adapter", **paths}, work
    )
    healthy_s = time.monotonic() - began
    try:
        async with aiohttp.ClientSession() as session:
            await first_completion(session, server, "a-r2")
        return {"healthy_s": healthy_s, "first_completion_s": time.monotonic() - began}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runtime load/unload rounds")
    args = parser.parse_args()
    if not (vllm_venv() / "bin" / "python").exists():
        sys.exit(f"no vLLM CPU venv at {vllm_venv()}: run `make vllm-env`")
    with tempfile.TemporaryDirectory(prefix="lora-runtime-bench-") as tmp:
        root = Path(tmp)
        create_tiny_model(root / "models" / "base")
        runs = ["r1", "r2"]
        for run in runs:
            facts = FACTS if run == "r1" else tuple((q, f"Not {a}") for q, a in FACTS)
            train_memorising_adapter(
                root / "models" / "base", root / "runs" / run / "adapter", steps=60, facts=facts
            )
        paths = {"/models/followed/a": root / "runs", "/models": root / "models"}

        began = time.monotonic()
        server = start(container(resolution(followed=(FOLLOWED,))), paths, root / "runtime")
        runtime_start_s = time.monotonic() - began
        try:
            figures = asyncio.run(runtime_rounds(server, paths, runs, args.rounds))
        finally:
            server.stop()
        cold = asyncio.run(restart(paths, root / "restart"))

    print(f"runtime server start (once per pod): {runtime_start_s:.1f} s")
    print(f"{'round':>5} {'load (sync) s':>14} {'first completion s':>19} {'unload (sync) s':>16}")
    for i, f in enumerate(figures):
        print(f"{i:>5} {f['load_s']:>14.3f} {f['first_completion_s']:>19.3f} {f['unload_s']:>16.3f}")
    med = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
    print(f"{'median':>5} {med['load_s']:>14.3f} {med['first_completion_s']:>19.3f} {med['unload_s']:>16.3f}")
    print(
        f"restart with the adapter static: healthy after {cold['healthy_s']:.1f} s, "
        f"first completion after {cold['first_completion_s']:.1f} s"
    )
    runtime_total = med["load_s"] + med["first_completion_s"]
    ratio = cold["first_completion_s"] / runtime_total
    print(f"runtime load + first completion vs restart: {ratio:.0f}x faster")
    print(
        f"lora_runtime: load_s={med['load_s']:.3f} first_completion_s={med['first_completion_s']:.3f} "
        f"restart_to_first_completion_s={cold['first_completion_s']:.1f}"
    )


if __name__ == "__main__":
    main()
