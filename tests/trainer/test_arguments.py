"""How the config maps onto HF TrainingArguments and the model set-up (no training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.trainer.conftest import render_config

from kubetune.api.trainingconfig import TrainingConfig
from kubetune.trainer.config import load_config
from kubetune.trainer.errors import ConfigError
from kubetune.trainer.export import Layout

CPU = {"cuda": False, "bf16_supported": False}


def _config(
    tmp_path: Path, spec: dict[str, Any] | None = None, deepspeed: Path | None = None
) -> TrainingConfig:
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    return load_config(
        render_config(tmp_path, model=tmp_path / "model", dataset=data, spec=spec, deepspeed=deepspeed)
    )


def _arguments(config: TrainingConfig, has_validation: bool = True) -> Any:
    from kubetune.trainer.train import Hardware, training_arguments

    return training_arguments(
        config, Layout(Path(config.paths.output_dir)), "fp32", Hardware(**CPU), has_validation=has_validation
    )


def test_hyperparameters_reach_the_trainer(tmp_path: Path) -> None:
    hyperparameters = {
        "epochs": 2,
        "learningRate": 3e-4,
        "perDeviceBatchSize": 6,
        "gradientAccumulationSteps": 3,
        "warmupRatio": 0.1,
        "weightDecay": 0.01,
        "maxGradNorm": 0.5,
        "lrScheduler": "linear",
        "gradientCheckpointing": True,
        "evalSteps": 7,
        "saveSteps": 14,
        "loggingSteps": 2,
    }
    args = _arguments(_config(tmp_path, {"hyperparameters": hyperparameters}))

    assert (args.num_train_epochs, args.learning_rate, args.per_device_train_batch_size) == (2, 3e-4, 6)
    assert (args.gradient_accumulation_steps, args.warmup_steps, args.weight_decay) == (3, 0.1, 0.01)
    assert (args.max_grad_norm, args.lr_scheduler_type.value, args.activation_checkpointing) == (
        0.5,
        "linear",
        True,
    )
    assert (args.eval_strategy.value, args.eval_steps, args.save_strategy.value, args.save_steps) == (
        "steps",
        7,
        "steps",
        14,
    )
    assert args.output_dir == str(tmp_path / "output" / "checkpoints")
    assert (args.logging_steps, args.use_cpu, args.bf16, args.fp16) == (2, True, False, False)


@pytest.mark.parametrize(
    ("has_validation", "eval_steps", "expected"),
    [(True, None, "epoch"), (True, 5, "steps"), (False, 5, "no")],
)
def test_evaluation_schedule(
    tmp_path: Path, has_validation: bool, eval_steps: int | None, expected: str
) -> None:
    spec = {"hyperparameters": {"evalSteps": eval_steps}} if eval_steps else None
    assert _arguments(_config(tmp_path, spec), has_validation).eval_strategy.value == expected


def test_early_stopping_aligns_checkpoints_with_evaluations(tmp_path: Path) -> None:
    spec = {"hyperparameters": {"evalSteps": 5, "saveSteps": 7, "earlyStoppingPatience": 2}}
    args = _arguments(_config(tmp_path, spec))
    assert (args.save_steps, args.load_best_model_at_end, args.metric_for_best_model) == (
        5,
        True,
        "eval_loss",
    )


def test_early_stopping_without_validation_split_is_a_config_error(tmp_path: Path) -> None:
    config = _config(tmp_path, {"hyperparameters": {"earlyStoppingPatience": 2}})
    with pytest.raises(ConfigError, match="earlyStoppingPatience needs a validation split"):
        _arguments(config, has_validation=False)


def test_deepspeed_path_is_passed_and_a_broken_json_fails_fast(tmp_path: Path) -> None:
    good = tmp_path / "ds.json"
    good.write_text(json.dumps({"zero_optimization": {"stage": 0}, "train_micro_batch_size_per_gpu": "auto"}))
    assert _config(tmp_path, deepspeed=good).paths.deepspeed_config == str(good)

    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="invalid DeepSpeed config"):
        _arguments(_config(tmp_path, deepspeed=broken))


def test_qlora_without_cuda_is_a_clear_config_error(tmp_path: Path) -> None:
    from kubetune.trainer.train import Hardware, load_model

    config = _config(tmp_path, {"method": "qlora"})
    with pytest.raises(
        ConfigError, match="method qlora needs a CUDA GPU: bitsandbytes 4-bit kernels do not run"
    ):
        load_model(config, Hardware(**CPU), "fp32")


def test_lora_targets_missing_from_the_model_are_a_config_error(tmp_path: Path, tiny_model: Path) -> None:
    from kubetune.trainer.train import Hardware, load_model

    config = _config(tmp_path, {"lora": {"targetModules": ["no_such_proj"]}})
    config = config.model_copy(
        update={"paths": config.paths.model_copy(update={"base_model": str(tiny_model)})}
    )
    with pytest.raises(ConfigError, match="LoRA config does not fit the model"):
        load_model(config, Hardware(**CPU), "fp32")


def test_stage_accepts_mounted_inputs_and_rejects_missing_ones(tmp_path: Path, tiny_model: Path) -> None:
    from kubetune.trainer.stage import stage, stage_model

    config = _config(tmp_path)
    with pytest.raises(
        ConfigError, match=r"base model pvc://models/tiny is not mounted at .*model \(no config.json\)"
    ):
        stage_model(config)
    mounted = config.model_copy(
        update={"paths": config.paths.model_copy(update={"base_model": str(tiny_model)})}
    )
    stage(mounted)  # both present: nothing to do, no error
