"""Throughput figures: FLOPs per token, the GPU peak table, MFU, kernel choices and the token count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from kubetune.api.finetunejob import Hyperparameters
from kubetune.trainer.callbacks import ProgressCallback, Throughput
from kubetune.trainer.errors import ConfigError
from kubetune.trainer.kernels import KernelChoice, choose_kernels
from kubetune.trainer.progress import RecordingReporter
from kubetune.trainer.throughput import ModelShape, flops_per_token, gpu_peak, mfu, peak_flops


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),  # torch.cuda.get_device_name
        ("NVIDIA-H100-80GB-HBM3", "H100 SXM"),  # nvidia.com/gpu.product label
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA-H100-NVL", "H100 NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA-A100-PCIE-40GB", "A100"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10", "A10"),
        ("Tesla T4", "T4"),
        ("Tesla-V100-SXM2-16GB", "V100"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA A10G", None),  # no published tensor-core figures: not guessed
        ("NVIDIA GeForce RTX 4090", None),
        ("", None),
    ],
)
def test_gpu_names_find_their_row_by_whole_words(name: str, expected: str | None) -> None:
    peak = gpu_peak(name)
    assert (peak.name if peak else None) == expected


@pytest.mark.parametrize(
    ("name", "precision", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989),
        ("NVIDIA H100 80GB HBM3", "fp32", 495),  # TF32 tensor cores
        ("NVIDIA A100-SXM4-80GB", "fp16", 312),
        ("Tesla T4", "bf16", 65),  # no bf16: the trainer falls back to fp16
        ("Tesla T4", "fp32", 8.1),  # no TF32 either
    ],
)
def test_peak_follows_the_training_precision(name: str, precision: Any, tflops: float) -> None:
    peak = gpu_peak(name)
    assert peak is not None
    assert peak_flops(peak, precision) == pytest.approx(tflops * 1e12)


QWEN2_1_5B = ModelShape(matmul_parameters=1_543_714_304, layers=28, hidden_size=1536)


@pytest.mark.parametrize(
    ("shape", "sequence", "full", "expected"),
    [
        (ModelShape(1000, 2, 10), 0, True, 6000),
        (ModelShape(1000, 2, 10), 0, False, 4000),  # LoRA: no weight gradients for frozen weights
        (ModelShape(1000, 2, 10), 100, True, 6000 + 12 * 2 * 10 * 100),
        (QWEN2_1_5B, 1024, False, 4 * 1_543_714_304 + 12 * 28 * 1536 * 1024),
    ],
)
def test_flops_per_token(shape: ModelShape, sequence: float, full: bool, expected: float) -> None:
    assert flops_per_token(shape, sequence, full_weights=full) == expected


@pytest.mark.parametrize(
    ("tokens_per_second", "per_token", "peak", "expected"),
    [
        (1000.0, 1e9, 1e12, 1.0),
        (4000.0, 6.7e9, 8 * 989e12, 4000 * 6.7e9 / (8 * 989e12)),
        (0.0, 1e9, 1e12, 0.0),
    ],
)
def test_mfu_is_achieved_over_peak_flops(
    tokens_per_second: float, per_token: float, peak: float, expected: float
) -> None:
    assert mfu(tokens_per_second, per_token, peak) == pytest.approx(expected)


def test_mfu_needs_a_peak() -> None:
    with pytest.raises(ValueError, match="positive peak"):
        mfu(1.0, 1.0, 0.0)


@pytest.mark.parametrize("tied", [True, False])
def test_model_shape_counts_matmul_weights_once(tiny_model: Path, tied: bool) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from kubetune.trainer.train import model_shape

    config = AutoConfig.from_pretrained(tiny_model, tie_word_embeddings=tied)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, config=config)
    embedding = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())  # tied weights once
    # Tied: the table is the output projection (a matmul); untied: the lookup table is left out.
    expected = total if tied else total - embedding
    assert model_shape(model) == ModelShape(expected, layers=2, hidden_size=128)


def test_model_shape_under_zero3_counts_the_full_sizes_of_partitioned_weights(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune.trainer.train import model_shape

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    expected = model_shape(model)
    for parameter in model.parameters():
        # What ZeRO-3 leaves on each rank: an empty placeholder that knows the full size.
        parameter.ds_numel = parameter.numel()  # type: ignore[attr-defined]
        parameter.data = torch.empty(0)
    assert model_shape(model) == expected


def _hp(**fields: Any) -> Hyperparameters:
    return Hyperparameters.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "cuda", "installed", "expected"),
    [
        ({}, False, set(), KernelChoice(None, liger=False)),
        ({"attnImplementation": "sdpa"}, False, set(), KernelChoice("sdpa", liger=False)),
        ({"attnImplementation": "eager"}, False, set(), KernelChoice("eager", liger=False)),
        (
            {"attnImplementation": "flash_attention_2", "ligerKernels": True},
            True,
            {"flash_attn", "liger_kernel"},
            KernelChoice("flash_attention_2", liger=True),
        ),
        ({"attnImplementation": "flash_attention_2"}, False, {"flash_attn"}, "needs a CUDA GPU"),
        ({"attnImplementation": "flash_attention_2"}, True, set(), "needs the flash-attn package"),
        ({"ligerKernels": True}, False, {"liger_kernel"}, "ligerKernels needs a CUDA GPU"),
        ({"ligerKernels": True}, True, set(), "needs the liger-kernel package"),
    ],
)
def test_kernel_choice_or_a_config_error_naming_the_field(
    fields: dict[str, Any], cuda: bool, installed: set[str], expected: KernelChoice | str
) -> None:
    def check() -> KernelChoice:
        return choose_kernels(_hp(**fields), cuda=cuda, is_installed=lambda name: name in installed)

    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected) as error:
            check()
        assert "hyperparameters." in str(error.value)
    else:
        assert check() == expected


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_callback_counts_served_tokens_over_ranks_and_reports_tokens_per_second_and_mfu() -> None:
    clock, reporter, served = Clock(), RecordingReporter(), [0]
    summed: list[int] = []

    def two_ranks(value: int) -> int:
        summed.append(value)
        return 2 * value  # the other rank served as many

    callback = ProgressCallback(
        reporter,
        clock,
        tokens_served=lambda: served[0],
        throughput=Throughput(flops_per_token=1e9, peak_flops=4e12),
        sum_ranks=two_ranks,
    )
    args, control = TrainingArguments(output_dir="unused", use_cpu=True), TrainerControl()
    state = TrainerState(max_steps=10)
    served[0] = 100  # e.g. a warm-up batch fetched before training: not counted
    callback.on_train_begin(args, state, control)

    served[0], clock.now, state.global_step = 600, 2.0, 5
    callback.on_log(args, state, control, logs={"loss": 1.5, "learning_rate": 1e-4})
    served[0], clock.now, state.global_step = 1100, 3.0, 10
    callback.on_log(args, state, control, logs={"eval_loss": 1.2})  # an evaluation: no tokens counted
    callback.on_train_end(args, state, control)

    assert summed == [500, 500]
    assert state.num_input_tokens_seen == 2000
    first, evaluation, last = reporter.updates
    assert first.tokens_per_second == 500.0  # 1000 tokens (both ranks) in 2 s
    assert first.mfu == pytest.approx(500 * 1e9 / 4e12)
    assert (evaluation.eval_loss, last.step, last.total_steps) == (1.2, 10, 10)


def test_callback_reports_no_mfu_without_a_known_peak() -> None:
    reporter = RecordingReporter()
    callback = ProgressCallback(reporter, throughput=Throughput(flops_per_token=1e9, peak_flops=None))
    args, control, state = (
        TrainingArguments(output_dir="unused", use_cpu=True),
        TrainerControl(),
        TrainerState(),
    )
    callback.on_train_begin(args, state, control)
    state.num_input_tokens_seen = 50
    callback.on_log(args, state, control, logs={"loss": 1.0})
    assert reporter.updates[0].tokens_per_second is not None
    assert reporter.updates[0].mfu is None
    assert "mfu" not in reporter.updates[0].to_report()
