"""Preflight: impossible or doomed FineTuneJob specs, caught before any pod starts. Pure.

Errors fail the FineTuneJob with reason InvalidSpec; warnings are reported but do not block.
The full fine-tuning memory estimate (per GPU, mixed-precision AdamW, after ZeRO partitioning
over W = nodes * gpusPerNode GPUs, Ψ = parameter count; Rajbhandari et al., ZeRO, 2020):

    weights 2Ψ + gradients 2Ψ + optimizer states 12Ψ (fp32 master, momentum, variance)
    ZeRO-0: 16Ψ          ZeRO-1: 4Ψ + 12Ψ/W       ZeRO-2: 2Ψ + 14Ψ/W       ZeRO-3: 16Ψ/W
    offloadOptimizer drops the 12Ψ term (it lives in CPU memory); offloadParams (ZeRO-3) also
    drops the 2Ψ/W weights term. Activations come on top, hence the warning at 85% of the GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kubetune.api.finetunejob import FineTuneJobSpec, Method
from kubetune.api.uris import parse_uri

GIB = 1024**3
MEMORY_HEADROOM = 0.85

# Memory of common `nvidia.com/gpu.product` values, in GiB (GPU feature discovery spells them so).
GPU_MEMORY_GIB: dict[str, float] = {
    "NVIDIA-H200": 141,
    "NVIDIA-H100-80GB-HBM3": 80,
    "NVIDIA-H100-NVL": 94,
    "NVIDIA-A100-SXM4-80GB": 80,
    "NVIDIA-A100-SXM4-40GB": 40,
    "NVIDIA-A100-PCIE-40GB": 40,
    "NVIDIA-A100-80GB-PCIe": 80,
    "NVIDIA-L40S": 48,
    "NVIDIA-L4": 24,
    "NVIDIA-A10G": 24,
    "Tesla-T4": 16,
    "Tesla-V100-SXM2-16GB": 16,
}

# "1.5B", "8b", "125M", and mixtures of experts "8x7B" (counted as 8 * 7B: errs high).
_SIZE_IN_NAME = re.compile(r"(?<![\w.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bBmM])(?![a-zA-Z])")


@dataclass(frozen=True)
class Problem:
    severity: Literal["error", "warning"]
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def parameters_from_name(model_uri: str) -> int | None:
    """Parameter count from a conventional model name (`Qwen2-1.5B`, `Llama-3-8b`), if any."""
    name = model_uri.rstrip("/").rsplit("/", 1)[-1]
    matches = list(_SIZE_IN_NAME.finditer(name.replace("_", "-")))
    if not matches:
        return None
    match = matches[-1]  # "Llama-3-8B": the size comes after the version
    experts = int(match.group(1) or 1)
    scale = 1e9 if match.group(3) in "bB" else 1e6
    return int(experts * float(match.group(2)) * scale)


def full_finetune_bytes_per_gpu(spec: FineTuneJobSpec, parameters: int) -> float:
    """The documented estimate above (model states only, no activations)."""
    world = spec.resources.nodes * max(spec.resources.gpus_per_node, 1)
    ds = spec.deepspeed
    stage = ds.zero_stage if ds else 0
    optimizer = 0.0 if ds and ds.offload_optimizer else 12.0
    weights = 0.0 if ds and ds.offload_params and stage == 3 else 2.0
    grads = 2.0
    if stage == 0:
        per_param = weights + grads + optimizer
    elif stage == 1:
        per_param = weights + grads + optimizer / world
    elif stage == 2:
        per_param = weights + (grads + optimizer) / world
    else:
        per_param = (weights + grads + optimizer) / world
    return per_param * parameters


def preflight(
    spec: FineTuneJobSpec,
    *,
    node_gpu_capacity: dict[str, int] | None,
    model_context_length: int | None,
    model_parameters: int | None = None,
) -> list[Problem]:
    """Problems with `spec`, errors first.

    node_gpu_capacity: largest nvidia.com/gpu allocatable per node, by gpu.product label (from the
        Node list; None when the operator may not list nodes).
    model_context_length: the base model's max_position_embeddings, when known.
    model_parameters: the base model's parameter count; guessed from its name when None.
    """
    problems: list[Problem] = []
    res = spec.resources
    if spec.method is Method.QLORA and spec.deepspeed is not None and spec.deepspeed.zero_stage == 3:
        problems.append(
            Problem(
                "error",
                "spec.deepspeed.zeroStage",
                "method qlora is incompatible with ZeRO-3 (4-bit weights cannot be partitioned)",
            )
        )
    if node_gpu_capacity is not None and res.gpus_per_node > 0:
        if res.gpu_type is not None:
            offered = node_gpu_capacity.get(res.gpu_type)
            where = f"nodes with nvidia.com/gpu.product={res.gpu_type}"
        else:
            offered = max(node_gpu_capacity.values(), default=None)
            where = "any node"
        if offered is None:
            # A cluster autoscaler may still add such nodes: the pods wait as Unschedulable.
            what = f"GPUs of type {res.gpu_type}" if res.gpu_type else "nvidia.com/gpu"
            problems.append(Problem("warning", "spec.resources.gpuType", f"no node offers {what} yet"))
        elif res.gpus_per_node > offered:
            problems.append(
                Problem(
                    "error",
                    "spec.resources.gpusPerNode",
                    f"{res.gpus_per_node} GPUs per pod requested but {where} offer at most {offered}",
                )
            )
    if model_context_length is not None and spec.dataset.max_seq_length > model_context_length:
        problems.append(
            Problem(
                "error",
                "spec.dataset.maxSeqLength",
                f"{spec.dataset.max_seq_length} exceeds the model's context length {model_context_length}",
            )
        )
    model_ref, dataset_ref = spec.base_model.secret_ref, spec.dataset.secret_ref
    model_scheme, dataset_scheme = parse_uri(spec.base_model.uri).scheme, parse_uri(spec.dataset.uri).scheme
    if model_ref and dataset_ref and model_scheme is dataset_scheme and model_ref != dataset_ref:
        problems.append(
            Problem(
                "error",
                "spec.dataset.secretRef",
                f"baseModel and dataset are both {model_scheme.value}:// and must use the same secretRef "
                "(the staging step gets one set of credentials per scheme)",
            )
        )
    problems.extend(_memory_warning(spec, model_parameters))
    return sorted(problems, key=lambda p: p.severity != "error")


def _memory_warning(spec: FineTuneJobSpec, model_parameters: int | None) -> list[Problem]:
    if spec.method is not Method.FULL or spec.resources.gpu_type is None:
        return []
    gpu_gib = GPU_MEMORY_GIB.get(spec.resources.gpu_type)
    parameters = model_parameters or parameters_from_name(spec.base_model.uri)
    if gpu_gib is None or parameters is None:
        return []
    need_gib = full_finetune_bytes_per_gpu(spec, parameters) / GIB
    if need_gib <= MEMORY_HEADROOM * gpu_gib:
        return []
    stage = spec.deepspeed.zero_stage if spec.deepspeed else 0
    gpus = spec.resources.nodes * spec.resources.gpus_per_node
    return [
        Problem(
            "warning",
            "spec.resources",
            f"full fine-tuning of ~{parameters / 1e9:.1f}B parameters needs ~{need_gib:.0f} GiB per GPU "
            f"for model states with ZeRO-{stage} on {gpus} GPUs, "
            f"above {MEMORY_HEADROOM:.0%} of {gpu_gib:.0f} GiB ({spec.resources.gpu_type}); use more GPUs, "
            "a higher ZeRO stage, offload, or LoRA",
        )
    ]
