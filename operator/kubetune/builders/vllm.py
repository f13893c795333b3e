"""The vLLM OpenAI server command line for one variant. Pure.

docs/vllm-flags.md maps every spec field to the flag rendered here. The serving tests run exactly
this command (with the /models paths swapped for local folders) against the real vLLM CPU build.
"""

from __future__ import annotations

import posixpath

from kubetune.api.modeldeployment import Variant
from kubetune.api.uris import Scheme, parse_uri
from kubetune.serving.resolution import FollowedAdapter, Resolution, served_model_name

VLLM_PORT = 8000
MODEL_ROOT = "/models"
BASE_MODEL_PATH = f"{MODEL_ROOT}/base"
# `python -m` rather than the `vllm serve` console script: the same entry point works in the upstream
# image and in a pip install whose `vllm` script cannot find its distribution's metadata.
VLLM_COMMAND = ["python3", "-m", "vllm.entrypoints.openai.api_server"]
# Ranks vLLM accepts for --max-lora-rank; an adapter's rank is rounded up to the next one.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
FOLLOWED_ROOT = f"{MODEL_ROOT}/followed"
# A followed adapter holds two revisions while weight moves from the serving one to its challenger.
REVISIONS_PER_FOLLOWED_ADAPTER = 2
RUNTIME_LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def adapter_path(name: str) -> str:
    return f"{MODEL_ROOT}/adapters/{name}"


def followed_root_path(name: str) -> str:
    """Where the pod mounts a followed adapter's storage root (the schedule's output folder)."""
    return f"{FOLLOWED_ROOT}/{name}"


def followed_root_problem(root_uri: str) -> str | None:
    """Why revisions under `root_uri` cannot be loaded into running pods, or None when they can.

    Only a PVC can be mounted whole at pod start and show runs written after it; s3:// and hf://
    artifacts are copied by an init container once, so a later run would need a pod restart.
    """
    try:
        uri = parse_uri(root_uri)
    except ValueError as exc:
        return str(exc)
    if uri.scheme is not Scheme.PVC:
        return f"{root_uri}: runtime LoRA loading needs the schedule's output on a pvc:// volume"
    return None


def runtime_adapter_path(followed: FollowedAdapter, adapter_uri: str) -> str:
    """The in-pod path of one revision's adapter (`adapter_uri`, under `followed.root_uri`), as
    /v1/load_lora_adapter takes it. ValueError when the adapter is not under the mounted root."""
    problem = followed_root_problem(followed.root_uri)
    if problem is not None:
        raise ValueError(problem)
    root, adapter = parse_uri(followed.root_uri), parse_uri(adapter_uri)
    relative = posixpath.relpath(adapter.path or ".", root.path or ".")
    if (
        adapter.scheme is not root.scheme
        or adapter.authority != root.authority
        or relative == "."
        or relative.split("/", 1)[0] == ".."
        or posixpath.normpath(adapter.path) != adapter.path
    ):
        raise ValueError(f"{adapter_uri} is not a folder under {followed.root_uri}")
    return f"{followed_root_path(followed.name)}/{relative}"


def _round_up_rank(rank: int) -> int:
    return next((r for r in VLLM_LORA_RANKS if r >= rank), VLLM_LORA_RANKS[-1])


def max_lora_rank(variant: Variant, resolution: Resolution) -> int | None:
    """The spec's value, else the largest rank known from the adapters' FineTuneJobs (vLLM's
    default of 16 would refuse a rank-32 adapter at load time)."""
    if variant.vllm.max_lora_rank is not None:
        return variant.vllm.max_lora_rank
    ranks = [m.rank for m in resolution.lora_modules if m.rank is not None]
    ranks += [f.rank for f in resolution.followed_adapters if f.rank is not None]
    return _round_up_rank(max(ranks)) if ranks else None


def max_loras(variant: Variant, resolution: Resolution) -> int:
    """The spec's value, else room for every static adapter and two revisions of each followed one
    (past it vLLM evicts adapters from its cache and reloads them from disk on the next request)."""
    if variant.vllm.max_loras is not None:
        return variant.vllm.max_loras
    followed = len(resolution.followed_adapters) * REVISIONS_PER_FOLLOWED_ADAPTER
    return len(resolution.lora_modules) + followed


def vllm_env(resolution: Resolution) -> list[dict[str, str]]:
    """Engine settings that are environment variables rather than flags."""
    if not resolution.followed_adapters:
        return []
    # Adds /v1/load_lora_adapter and /v1/unload_lora_adapter; no LoRA resolver plugin is enabled, so a
    # client naming an unknown adapter still gets a 404 rather than a load.
    return [{"name": RUNTIME_LORA_ENV, "value": "True"}]


def vllm_args(variant: Variant, resolution: Resolution) -> list[str]:
    """Arguments after VLLM_COMMAND; `extraArgs` come last so that they override ours."""
    engine = variant.vllm
    args = [
        "--model", BASE_MODEL_PATH,
        "--served-model-name", served_model_name(variant, resolution),
        "--tensor-parallel-size", str(engine.tensor_parallel_size),
        "--gpu-memory-utilization", str(engine.gpu_memory_utilization),
        "--dtype", engine.dtype,
    ]  # fmt: skip
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    if engine.quantization is not None:
        args += ["--quantization", engine.quantization]
    if engine.max_num_seqs is not None:
        args += ["--max-num-seqs", str(engine.max_num_seqs)]
    if resolution.lora_modules or resolution.followed_adapters:
        args += ["--enable-lora", "--max-loras", str(max_loras(variant, resolution))]
        rank = max_lora_rank(variant, resolution)
        if rank is not None:
            args += ["--max-lora-rank", str(rank)]
    if resolution.lora_modules:
        args += ["--lora-modules", *(f"{m.name}={adapter_path(m.name)}" for m in resolution.lora_modules)]
    args += ["--host", "0.0.0.0", "--port", str(VLLM_PORT)]  # noqa: S104 (a pod serves on all interfaces)
    args += list(engine.extra_args)
    return args
