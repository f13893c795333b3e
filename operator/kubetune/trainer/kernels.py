"""Throughput options that depend on the hardware and the image: checked before the model loads.

Admission already rejects flash_attention_2 and Liger kernels without GPUs (CEL on the spec); this is
the trainer's own check, for what admission cannot see: a GPU node without CUDA visible, or an image
without the package. Each failure is a ConfigError (exit 40, not retried) that names the field.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from kubetune.api.finetunejob import Hyperparameters
from kubetune.trainer.errors import ConfigError


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class KernelChoice:
    """What reaches transformers: `attn_implementation` for from_pretrained (None: its default) and
    TrainingArguments' `use_liger_kernel`."""

    attn_implementation: str | None
    liger: bool


def choose_kernels(
    hp: Hyperparameters, *, cuda: bool, is_installed: Callable[[str], bool] = installed
) -> KernelChoice:
    if hp.attn_implementation == "flash_attention_2":
        if not cuda:
            raise ConfigError(
                "hyperparameters.attnImplementation flash_attention_2 needs a CUDA GPU; "
                "use sdpa (or auto) on CPU"
            )
        if not is_installed("flash_attn"):
            raise ConfigError(
                "hyperparameters.attnImplementation flash_attention_2 needs the flash-attn package, "
                "which this trainer image lacks; use sdpa (or auto)"
            )
    if hp.liger_kernels:
        if not cuda:
            raise ConfigError("hyperparameters.ligerKernels needs a CUDA GPU (Liger's kernels are Triton)")
        if not is_installed("liger_kernel"):
            raise ConfigError(
                "hyperparameters.ligerKernels needs the liger-kernel package, which this trainer image lacks"
            )
    return KernelChoice(attn_implementation=hp.attn_implementation, liger=bool(hp.liger_kernels))
