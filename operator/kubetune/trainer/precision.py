"""Choosing a usable training precision for the hardware at hand."""

from __future__ import annotations

import logging
from typing import Literal

log = logging.getLogger(__name__)

Precision = Literal["bf16", "fp16", "fp32"]


def resolve_precision(requested: Precision, *, cuda: bool, bf16_supported: bool) -> Precision:
    """CPU trains in fp32 (fp16 is unsupported and CPU bf16 autocast is slow without AMX); a GPU without
    bf16 (V100, T4) falls back to fp16. Every fallback is logged."""
    if not cuda:
        if requested != "fp32":
            log.info("precision %s requested but no CUDA device: training in fp32 on CPU", requested)
        return "fp32"
    if requested == "bf16" and not bf16_supported:
        log.info("precision bf16 requested but this GPU lacks bf16: training in fp16")
        return "fp16"
    return requested
