"""Preflight: impossible FineTuneJob specs are errors, doomed full fine-tunes are warnings."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.preflight import GIB, full_finetune_bytes_per_gpu, parameters_from_name, preflight


def spec(**fields: Any) -> FineTuneJobSpec:
    base: dict[str, Any] = {
        "baseModel": {"uri": "pvc://m/x"},
        "dataset": {"uri": "pvc://d/x.jsonl"},
        "output": {"uri": "pvc://o/x"},
    }
    return FineTuneJobSpec.model_validate(base | fields)


CAPACITY = {"NVIDIA-H100-80GB-HBM3": 8, "NVIDIA-L4": 1}


@pytest.mark.parametrize(
    ("fields", "capacity", "context", "parameters", "expected"),
    [
        ({}, None, None, None, []),
        # QLoRA + ZeRO-3 (the admission CEL rule also rejects it; preflight covers configs read back)
        (
            {"method": "qlora", "deepspeed": {"zeroStage": 3}, "resources": {"gpusPerNode": 1}},
            None,
            None,
            None,
            [("error", "spec.deepspeed.zeroStage")],
        ),
        (
            {"method": "qlora", "deepspeed": {"zeroStage": 2}, "resources": {"gpusPerNode": 1}},
            None,
            None,
            None,
            [],
        ),
        # GPUs per node against what nodes of that type offer
        ({"resources": {"gpusPerNode": 8, "gpuType": "NVIDIA-H100-80GB-HBM3"}}, CAPACITY, None, None, []),
        (
            {"resources": {"gpusPerNode": 2, "gpuType": "NVIDIA-L4"}},
            CAPACITY,
            None,
            None,
            [("error", "spec.resources.gpusPerNode")],
        ),
        (
            {"resources": {"gpusPerNode": 1, "gpuType": "NVIDIA-B200"}},
            CAPACITY,
            None,
            None,
            [("warning", "spec.resources.gpuType")],
        ),
        ({"resources": {"gpusPerNode": 16}}, CAPACITY, None, None, [("error", "spec.resources.gpusPerNode")]),
        ({"resources": {"gpusPerNode": 16}}, None, None, None, []),
        ({"resources": {"gpusPerNode": 1}}, {}, None, None, [("warning", "spec.resources.gpuType")]),
        ({"resources": {"gpusPerNode": 0, "gpuType": "NVIDIA-B200"}}, CAPACITY, None, None, []),
        # maxSeqLength above the model's context
        (
            {"dataset": {"uri": "pvc://d/x.jsonl", "maxSeqLength": 8192}},
            None,
            4096,
            None,
            [("error", "spec.dataset.maxSeqLength")],
        ),
        ({"dataset": {"uri": "pvc://d/x.jsonl", "maxSeqLength": 4096}}, None, 4096, None, []),
        # full fine-tuning memory: 7B on one 80 GB GPU without ZeRO needs ~104 GiB
        (
            {"method": "full", "resources": {"gpuType": "NVIDIA-H100-80GB-HBM3"}},
            None,
            None,
            7_000_000_000,
            [("warning", "spec.resources")],
        ),
        (
            {
                "method": "full",
                "deepspeed": {"zeroStage": 3},
                "resources": {"nodes": 2, "gpusPerNode": 8, "gpuType": "NVIDIA-H100-80GB-HBM3"},
            },
            None,
            None,
            7_000_000_000,
            [],
        ),
        # errors sort before warnings; the size comes from the model name when not given
        (
            {
                "method": "full",
                "baseModel": {"uri": "meta-llama/Llama-3.1-70B"},
                "dataset": {"uri": "pvc://d/x.jsonl", "maxSeqLength": 9000},
                "resources": {"gpusPerNode": 8, "gpuType": "NVIDIA-H100-80GB-HBM3"},
            },
            CAPACITY,
            8192,
            None,
            [("error", "spec.dataset.maxSeqLength"), ("warning", "spec.resources")],
        ),
        (
            {
                "method": "lora",
                "baseModel": {"uri": "meta-llama/Llama-3.1-70B"},
                "resources": {"gpuType": "NVIDIA-L4"},
            },
            None,
            None,
            None,
            [],
        ),
        ({"method": "full", "resources": {"gpuType": "Unknown-GPU"}}, None, None, 70_000_000_000, []),
        # the staging step has one set of credentials per scheme
        (
            {
                "baseModel": {"uri": "s3://b/m", "secretRef": {"name": "a"}},
                "dataset": {"uri": "s3://b/d.jsonl", "secretRef": {"name": "b"}},
            },
            None,
            None,
            None,
            [("error", "spec.dataset.secretRef")],
        ),
        (
            {
                "baseModel": {"uri": "s3://b/m", "secretRef": {"name": "a"}},
                "dataset": {"uri": "s3://b/d.jsonl", "secretRef": {"name": "a"}},
            },
            None,
            None,
            None,
            [],
        ),
        (
            {
                "baseModel": {"uri": "hf://o/m", "secretRef": {"name": "a"}},
                "dataset": {"uri": "s3://b/d.jsonl", "secretRef": {"name": "b"}},
            },
            None,
            None,
            None,
            [],
        ),
    ],
)
def test_preflight(
    fields: dict[str, Any],
    capacity: dict[str, int] | None,
    context: int | None,
    parameters: int | None,
    expected: list[tuple[str, str]],
) -> None:
    problems = preflight(
        spec(**fields), node_gpu_capacity=capacity, model_context_length=context, model_parameters=parameters
    )
    assert [(p.severity, p.field) for p in problems] == expected
    for p in problems:
        assert str(p).startswith(f"{p.field}: ")
        assert len(p.message) > 10


def test_gpu_capacity_message_names_the_numbers() -> None:
    problems = preflight(
        spec(resources={"gpusPerNode": 4, "gpuType": "NVIDIA-L4"}),
        node_gpu_capacity=CAPACITY,
        model_context_length=None,
    )
    assert problems[0].message == (
        "4 GPUs per pod requested but nodes with nvidia.com/gpu.product=NVIDIA-L4 offer at most 1"
    )


@pytest.mark.parametrize(
    ("deepspeed", "nodes", "gpus", "bytes_per_param"),
    [
        (None, 1, 1, 16.0),
        ({"zeroStage": 1}, 1, 8, 4 + 12 / 8),
        ({"zeroStage": 2}, 2, 8, 2 + 14 / 16),
        ({"zeroStage": 3}, 2, 8, 16 / 16),
        ({"zeroStage": 2, "offloadOptimizer": True}, 1, 4, 2 + 2 / 4),
        ({"zeroStage": 3, "offloadOptimizer": True, "offloadParams": True}, 1, 4, 2 / 4),
    ],
)
def test_memory_formula(
    deepspeed: dict[str, Any] | None, nodes: int, gpus: int, bytes_per_param: float
) -> None:
    fields: dict[str, Any] = {"method": "full", "resources": {"nodes": nodes, "gpusPerNode": gpus}}
    if deepspeed:
        fields["deepspeed"] = deepspeed
    assert full_finetune_bytes_per_gpu(spec(**fields), 1_000_000) == pytest.approx(
        bytes_per_param * 1_000_000
    )


def test_warning_quotes_the_estimate() -> None:
    problems = preflight(
        spec(method="full", resources={"gpuType": "NVIDIA-L4"}),
        node_gpu_capacity=None,
        model_context_length=None,
        model_parameters=1_500_000_000,
    )
    need = 16 * 1_500_000_000 / GIB
    assert f"~{need:.0f} GiB per GPU" in problems[0].message
    assert "ZeRO-0 on 1 GPUs" in problems[0].message


@pytest.mark.parametrize(
    ("uri", "parameters"),
    [
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1_500_000_000),
        ("hf://meta-llama/Llama-3-8b-instruct", 8_000_000_000),
        ("Qwen/Qwen2-0.5B-Instruct", 500_000_000),
        ("org/tiny-125M", 125_000_000),
        ("pvc://models/qwen2-7b/", 7_000_000_000),
        ("mistralai/Mixtral-8x7B-v0.1", 56_000_000_000),
        ("org/bert-base", None),
        ("gpt2", None),
    ],
)
def test_parameters_from_name(uri: str, parameters: int | None) -> None:
    assert parameters_from_name(uri) == parameters
