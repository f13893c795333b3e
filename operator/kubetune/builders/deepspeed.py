"""DeepSpeed JSON for a FineTuneJob: generated from zeroStage/offload, or copied from a ConfigMap.

Values the HF Trainer fills from its own arguments are "auto", so the spec's hyperparameters stay
the single source. `train_batch_size` is deliberately absent: HF derives it from the world size it
sees, and a literal or "auto" value that disagrees with torchrun's world size fails DeepSpeed's
batch-size check at start (docs/training-topology.md).
"""

from __future__ import annotations

import json
from typing import Any

from kubetune.api.finetunejob import FineTuneJobSpec

AUTO = "auto"
# Large enough that DeepSpeed's own step logging never competes with the progress contract.
STEPS_PER_PRINT = 1_000_000


def _offload(device_enabled: bool) -> dict[str, Any] | None:
    return {"device": "cpu", "pin_memory": True} if device_enabled else None


def _zero_section(spec: FineTuneJobSpec) -> dict[str, Any]:
    ds = spec.deepspeed
    assert ds is not None
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage == 0:
        return zero
    zero |= {
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": AUTO,
    }
    if ds.zero_stage >= 2:
        zero["allgather_bucket_size"] = 500_000_000
    optimizer_offload = _offload(ds.offload_optimizer)
    if optimizer_offload:
        zero["offload_optimizer"] = optimizer_offload
    if ds.zero_stage == 3:
        zero |= {
            "stage3_prefetch_bucket_size": AUTO,
            "stage3_param_persistence_threshold": AUTO,
            "stage3_max_live_parameters": 1_000_000_000,
            "stage3_max_reuse_distance": 1_000_000_000,
            # Without it a ZeRO-3 save writes empty (partitioned) tensors: a LoRA adapter or merged
            # model saved from rank 0 would be unusable.
            "stage3_gather_16bit_weights_on_model_save": True,
        }
        param_offload = _offload(ds.offload_params)
        if param_offload:
            zero["offload_param"] = param_offload
    return zero


def generate_deepspeed_config(spec: FineTuneJobSpec) -> dict[str, Any]:
    """DeepSpeed JSON from the spec's zeroStage/offload settings."""
    if spec.deepspeed is None:
        raise ValueError("spec.deepspeed is not set")
    config: dict[str, Any] = {
        "bf16": {"enabled": AUTO},
        "fp16": {"enabled": AUTO},
        "train_micro_batch_size_per_gpu": AUTO,
        "gradient_accumulation_steps": AUTO,
        "gradient_clipping": AUTO,
        "zero_optimization": _zero_section(spec),
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }
    if spec.deepspeed.offload_optimizer:
        # ZeRO-Offload refuses a client (torch) optimizer; naming one here makes DeepSpeed use its
        # CPU Adam, with HF filling the hyperparameters.
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": AUTO, "betas": AUTO, "eps": AUTO, "weight_decay": AUTO},
        }
    return config


def build_deepspeed_config(spec: FineTuneJobSpec, configmap_data: str | None) -> dict[str, Any]:
    """The DeepSpeed JSON the trainer gets.

    With `deepspeed.configRef`, `configmap_data` is the referenced ConfigMap value (read by the
    reconciler) and is used verbatim, except that ZeRO-3 with a LoRA/QLoRA adapter gets
    `stage3_gather_16bit_weights_on_model_save: true` unless the user set it.
    Raises ValueError for a missing or malformed referenced config.
    """
    ds = spec.deepspeed
    if ds is None:
        raise ValueError("spec.deepspeed is not set")
    if ds.config_ref is None:
        return generate_deepspeed_config(spec)
    ref = f"ConfigMap {ds.config_ref.name} key {ds.config_ref.key}"
    if configmap_data is None:
        raise ValueError(f"deepspeed.configRef: {ref} was not found")
    try:
        loaded = json.loads(configmap_data)
    except json.JSONDecodeError as err:
        raise ValueError(f"deepspeed.configRef: {ref} is not valid JSON: {err}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"deepspeed.configRef: {ref} must hold a JSON object")
    config: dict[str, Any] = loaded
    zero = config.get("zero_optimization")
    if isinstance(zero, dict) and zero.get("stage") == 3 and spec.effective_lora() is not None:
        zero.setdefault("stage3_gather_16bit_weights_on_model_save", True)
    return config
