"""DeepSpeed JSON rendering: generated from the spec, or taken from a ConfigMap."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.builders.deepspeed import build_deepspeed_config


def spec(deepspeed: dict[str, Any], method: str = "lora") -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "pvc://m/x"},
            "dataset": {"uri": "pvc://d/x.jsonl"},
            "output": {"uri": "pvc://o/x"},
            "method": method,
            "deepspeed": deepspeed,
        }
    )


# Each ZeRO stage's keys add to the stage below's.
ZERO_1 = {"stage", "overlap_comm", "contiguous_gradients", "reduce_bucket_size"}
ZERO_2 = ZERO_1 | {"allgather_bucket_size"}
ZERO_3 = ZERO_2 | {
    "stage3_prefetch_bucket_size",
    "stage3_param_persistence_threshold",
    "stage3_max_live_parameters",
    "stage3_max_reuse_distance",
    "stage3_gather_16bit_weights_on_model_save",
}


@pytest.mark.parametrize(
    ("deepspeed", "zero_keys", "optimizer"),
    [
        ({"zeroStage": 0}, {"stage"}, False),
        ({"zeroStage": 1}, ZERO_1, False),
        ({"zeroStage": 2}, ZERO_2, False),
        ({"zeroStage": 2, "offloadOptimizer": True}, ZERO_2 | {"offload_optimizer"}, True),
        ({"zeroStage": 3}, ZERO_3, False),
        (
            {"zeroStage": 3, "offloadOptimizer": True, "offloadParams": True},
            ZERO_3 | {"offload_optimizer", "offload_param"},
            True,
        ),
    ],
)
def test_generated_config(deepspeed: dict[str, Any], zero_keys: set[str], optimizer: bool) -> None:
    config = build_deepspeed_config(spec(deepspeed), None)
    zero = config["zero_optimization"]
    assert set(zero) == zero_keys
    assert zero["stage"] == deepspeed["zeroStage"]
    # HF fills these from the spec's hyperparameters: one source of truth.
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert config[key] == "auto"
    assert config["bf16"] == {"enabled": "auto"}
    assert config["fp16"] == {"enabled": "auto"}
    # A train_batch_size that disagrees with torchrun's world size fails DeepSpeed's check.
    assert "train_batch_size" not in config
    assert ("optimizer" in config) is optimizer
    if "offload_optimizer" in zero:
        assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    if zero.get("stage") == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    json.dumps(config, allow_nan=False)


@pytest.mark.parametrize(
    ("method", "text", "expected"),
    [
        (
            "lora",
            '{"zero_optimization": {"stage": 3}}',
            {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}},
        ),
        (
            "lora",
            '{"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": false}}',
            {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": False}},
        ),
        (
            "full",
            '{"zero_optimization": {"stage": 3}, "train_batch_size": 64}',
            {"zero_optimization": {"stage": 3}, "train_batch_size": 64},
        ),
        ("lora", '{"zero_optimization": {"stage": 2}}', {"zero_optimization": {"stage": 2}}),
    ],
)
def test_config_ref_is_copied(method: str, text: str, expected: dict[str, Any]) -> None:
    ds = {"zeroStage": 0, "configRef": {"name": "ds", "key": "ds.json"}}
    assert build_deepspeed_config(spec(ds, method), text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (None, "ConfigMap ds key ds.json was not found"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
    ],
)
def test_config_ref_errors(text: str | None, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        build_deepspeed_config(spec({"configRef": {"name": "ds", "key": "ds.json"}}), text)


def test_without_deepspeed_there_is_no_config() -> None:
    plain = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "pvc://m/x"},
            "dataset": {"uri": "pvc://d/x.jsonl"},
            "output": {"uri": "pvc://o/x"},
        }
    )
    with pytest.raises(ValueError, match="not set"):
        build_deepspeed_config(plain, None)
