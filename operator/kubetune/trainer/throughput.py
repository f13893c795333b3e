"""Model FLOPs per token, GPU peak FLOPs and model FLOPs utilisation (MFU): pure functions.

The formula (docs/trainer.md, "Throughput"): per trained token a decoder-only transformer costs

    6·N + 12·L·d·T   FLOPs when every weight is trained (PaLM, appendix B; torchtitan, nanoGPT),
    4·N + 12·L·d·T   FLOPs with LoRA/QLoRA: frozen weights get no weight gradient (the backward
                     pass computes activation gradients only), adapters are negligible,

where N counts the weights that take part in a matrix multiply (every parameter except the input
embedding table; a tied table counts once, as the output projection), L is the number of layers, d the
hidden size and T the mean training sequence length (attention scores and their weighted sum, forward
and backward, non-causal as in PaLM). Recomputation by gradient checkpointing is not counted: MFU
measures useful work, not hardware FLOPs.

    MFU = tokens/s (all ranks) · FLOPs per token / (GPUs · peak FLOP/s of one GPU)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubetune.trainer.precision import Precision


@dataclass(frozen=True)
class GpuPeak:
    """Dense (no structured sparsity) tensor-core peaks of one GPU, in TFLOP/s, from NVIDIA's datasheets."""

    name: str
    bf16: float | None  # also fp16 on these parts; None: no bf16 tensor cores (fp16 below)
    fp16: float
    tf32: float | None  # what fp32 matmuls run at with TF32 allowed; None: plain fp32 below
    fp32: float


# Most specific first: the first pattern found in the normalised device name wins ("h100 nvl" before
# "h100"). Patterns match whole words, so "l4" never matches an L40S nor "a10" an A100 or an A10G (not
# listed: NVIDIA publishes no tensor-core figures for it).
GPU_PEAKS: tuple[tuple[str, GpuPeak], ...] = (
    ("gb200", GpuPeak("B200 (GB200)", bf16=2500.0, fp16=2500.0, tf32=1250.0, fp32=80.0)),
    ("b200", GpuPeak("B200", bf16=2250.0, fp16=2250.0, tf32=1100.0, fp32=75.0)),
    ("h200 nvl", GpuPeak("H200 NVL", bf16=835.0, fp16=835.0, tf32=418.0, fp32=60.0)),
    ("h200", GpuPeak("H200", bf16=989.0, fp16=989.0, tf32=495.0, fp32=67.0)),
    ("gh200", GpuPeak("GH200", bf16=989.0, fp16=989.0, tf32=495.0, fp32=67.0)),
    ("h100 nvl", GpuPeak("H100 NVL", bf16=835.0, fp16=835.0, tf32=418.0, fp32=60.0)),
    ("h100 pcie", GpuPeak("H100 PCIe", bf16=756.0, fp16=756.0, tf32=378.0, fp32=51.0)),
    ("h100", GpuPeak("H100 SXM", bf16=989.0, fp16=989.0, tf32=495.0, fp32=67.0)),
    ("h800", GpuPeak("H800", bf16=989.0, fp16=989.0, tf32=495.0, fp32=67.0)),
    ("a100", GpuPeak("A100", bf16=312.0, fp16=312.0, tf32=156.0, fp32=19.5)),
    ("a800", GpuPeak("A800", bf16=312.0, fp16=312.0, tf32=156.0, fp32=19.5)),
    ("l40s", GpuPeak("L40S", bf16=362.0, fp16=362.0, tf32=183.0, fp32=91.6)),
    ("l40", GpuPeak("L40", bf16=181.0, fp16=181.0, tf32=90.5, fp32=90.5)),
    ("l4", GpuPeak("L4", bf16=121.0, fp16=121.0, tf32=60.0, fp32=30.3)),
    ("a10", GpuPeak("A10", bf16=125.0, fp16=125.0, tf32=62.5, fp32=31.2)),
    ("v100", GpuPeak("V100", bf16=None, fp16=125.0, tf32=None, fp32=15.7)),
    ("t4", GpuPeak("T4", bf16=None, fp16=65.0, tf32=None, fp32=8.1)),
)


def normalise_gpu_name(name: str) -> str:
    """'NVIDIA-H100-80GB-HBM3' (node label) and 'NVIDIA H100 80GB HBM3' (CUDA) → 'h100 80gb hbm3'."""
    words = re.split(r"[\s_\-]+", name.lower())
    return " ".join(word for word in words if word and word not in {"nvidia", "tesla", "geforce"})


def gpu_peak(device_name: str) -> GpuPeak | None:
    """The table row for a CUDA device name or nvidia.com/gpu.product label; None when unknown."""
    normalised = normalise_gpu_name(device_name)
    tokens = normalised.split()
    for pattern, peak in GPU_PEAKS:
        parts = pattern.split()
        # Whole words only ("l4" must not match "l40s"); multi-word patterns need every word present.
        if all(part in tokens for part in parts):
            return peak
    return None


def peak_flops(peak: GpuPeak, precision: Precision) -> float:
    """Peak FLOP/s of one GPU for the training precision (fp32 assumes TF32 matmuls where there are any)."""
    if precision == "bf16":
        tflops = peak.bf16 if peak.bf16 is not None else peak.fp16
    elif precision == "fp16":
        tflops = peak.fp16
    else:
        tflops = peak.tf32 if peak.tf32 is not None else peak.fp32
    return tflops * 1e12


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs formula needs from a model."""

    matmul_parameters: int  # N: every parameter except the input embedding table (see the module doc)
    layers: int
    hidden_size: int


def flops_per_token(shape: ModelShape, sequence_length: float, *, full_weights: bool) -> float:
    """Training FLOPs per token: (6 or 4)·N + 12·L·d·T (module docstring)."""
    weight_factor = 6 if full_weights else 4
    attention = 12 * shape.layers * shape.hidden_size * sequence_length
    return weight_factor * shape.matmul_parameters + attention


def mfu(tokens_per_second: float, flops_per_token_: float, peak_flops_total: float) -> float:
    """Model FLOPs utilisation in [0, 1]: `peak_flops_total` is the peak of all GPUs of the run."""
    if peak_flops_total <= 0:
        raise ValueError("mfu needs a positive peak")
    return tokens_per_second * flops_per_token_ / peak_flops_total
