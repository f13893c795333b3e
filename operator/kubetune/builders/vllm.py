"""The vLLM OpenAI server command line for one variant. Pure.

docs/vllm-flags.md maps every spec field to the flag rendered here. The serving tests run exactly
this command (with the /models paths swapped for local folders) against the real vLLM CPU build.
"""

from __future__ import annotations

from kubetune.api.modeldeployment import Variant
from kubetune.serving.resolution import Resolution, served_model_name

VLLM_PORT = 8000
MODEL_ROOT = "/models"
BASE_MODEL_PATH = f"{MODEL_ROOT}/base"
# `python -m` rather than the `vllm serve` console script: the same entry point works in the upstream
# image and in a pip install whose `vllm` script cannot find its distribution's metadata.
VLLM_COMMAND = ["python3", "-m", "vllm.entrypoints.openai.api_server"]
# Ranks vLLM accepts for --max-lora-rank; an adapter's rank is rounded up to the next one.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def adapter_path(name: str) -> str:
    return f"{MODEL_ROOT}/adapters/{name}"


def _round_up_rank(rank: int) -> int:
    return next((r for r in VLLM_LORA_RANKS if r >= rank), VLLM_LORA_RANKS[-1])


def max_lora_rank(variant: Variant, resolution: Resolution) -> int | None:
    """The spec's value, else the largest rank known from the adapters' FineTuneJobs (vLLM's
    default of 16 would refuse a rank-32 adapter at load time)."""
    if variant.vllm.max_lora_rank is not None:
        return variant.vllm.max_lora_rank
    ranks = [m.rank for m in resolution.lora_modules if m.rank is not None]
    return _round_up_rank(max(ranks)) if ranks else None


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
    if resolution.lora_modules:
        args += ["--enable-lora", "--max-loras", str(engine.max_loras or len(resolution.lora_modules))]
        rank = max_lora_rank(variant, resolution)
        if rank is not None:
            args += ["--max-lora-rank", str(rank)]
        args += ["--lora-modules", *(f"{m.name}={adapter_path(m.name)}" for m in resolution.lora_modules)]
    args += ["--host", "0.0.0.0", "--port", str(VLLM_PORT)]  # noqa: S104 (a pod serves on all interfaces)
    args += list(engine.extra_args)
    return args
