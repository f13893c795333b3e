"""Real fine-tuning runs of the tiny model on CPU (slow: each starts the trainer as a subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.trainer.conftest import REPO, read_jsonl, render_config, run_trainer, trainer_env

from kubetune.api.finetunejob import DatasetFormat, Progress
from kubetune.api.trainingconfig import TrainerResult, TrainingConfig
from kubetune.status.trainer_report import read_report, vet_result
from kubetune.trainer.checkpoints import CHECKPOINT, COMPLETE_MARKER, latest_checkpoint
from kubetune.trainer.data import prepare_dataset
from kubetune.trainer.ownership import CHECKPOINT_FILE

pytestmark = pytest.mark.slow

LORA_SPEC: dict[str, Any] = {
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targetModules": ["all-linear"]},
    "hyperparameters": {
        "precision": "bf16",  # falls back to fp32 on CPU, exercising the fallback
        "epochs": 15,
        "learningRate": 5e-3,
        "perDeviceBatchSize": 8,
        "warmupRatio": 0.05,
        "loggingSteps": 5,
        "evalSteps": 30,
        "saveSteps": 30,
    },
}


def _lora(evaluation: dict[str, Any], **hyperparameters: Any) -> dict[str, Any]:
    """LORA_SPEC with these hyperparameters changed and this evaluation."""
    changed = {**LORA_SPEC["hyperparameters"], **hyperparameters}
    return {**LORA_SPEC, "hyperparameters": changed, "evaluation": evaluation}


def _result(tmp: Path) -> TrainerResult:
    return TrainerResult.model_validate_json((tmp / "termination-log").read_text())


def _accepted_by_the_operator(reports: list[dict[str, Any]], result: TrainerResult, config: Path) -> None:
    """Every progress report of the run, and its final result, pass the operator's validation whole."""
    previous: Progress | None = None
    for line in reports:
        payload = json.dumps({"attempt": 0, "progress": {k: v for k, v in line.items() if k != "rank"}})
        reading = read_report({"report.json": payload}, attempt=0, previous=previous, now=datetime.now(UTC))
        assert reading.problem is None, (line, reading.problem)
        assert reading.progress is not None
        assert reading.progress.step == line["step"]
        previous = reading.progress
    spec = TrainingConfig.model_validate_json(config.read_text()).spec
    vetted, problems = vet_result(result, spec, previous.total_steps if previous else None)
    assert problems == []
    assert vetted == result


def _free_port() -> int:
    # torchrun's --master-port 0 is passed to workers verbatim (MASTER_PORT=0) and they hang.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _torchrun(nproc: int, config: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """`train --config` under torchrun with `nproc` processes on this machine."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            "-m",
            "kubetune.trainer",
            "train",
            "--config",
            str(config),
        ],
        cwd=REPO,
        env=trainer_env(tmp),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_lora_sft_learns_and_the_merged_model_answers_a_memorised_prompt(
    tmp_path: Path, tiny_model: Path, facts_dataset: Path
) -> None:
    spec = {**LORA_SPEC, "output": {"uri": "pvc://output/run", "mergeAdapter": True}}
    config = render_config(tmp_path, model=tiny_model, dataset=facts_dataset, spec=spec)

    done = run_trainer(["train", "--config", str(config)], tmp_path)

    assert done.returncode == 0, done.stderr[-4000:]
    output = tmp_path / "output"
    metrics = json.loads((output / "metrics.json").read_text())
    history = [point["loss"] for point in metrics["training"]["lossHistory"]]
    assert history[-1] < 0.5 * history[0], history
    assert metrics["evalLoss"] > 0
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["evalLoss"])
    assert 0 <= metrics["rougeL"] <= 1
    assert 0 <= metrics["bleu"] <= 100
    assert metrics["samples"] == 4

    # Artifacts: adapter, merged safetensors + tokenizer, manifest with the data hash.
    assert (output / "adapter" / "adapter_model.safetensors").is_file()
    assert (output / "merged" / "model.safetensors").is_file()
    assert (output / "merged" / "tokenizer.json").is_file()
    manifest = json.loads((output / "kubetune-manifest.json").read_text())
    digest = "sha256:" + hashlib.sha256(facts_dataset.read_bytes()).hexdigest()
    assert manifest["lineage"]["datasetDigest"] == digest
    assert (manifest["method"], manifest["baseModel"]["uri"]) == ("lora", "pvc://models/tiny")
    assert manifest["hyperparameters"]["learningRate"] == 5e-3
    assert manifest["metrics"] == {
        k: metrics[k] for k in ("evalLoss", "perplexity", "rougeL", "bleu", "samples")
    }

    result = _result(tmp_path)
    assert result.outcome == "Succeeded"
    assert result.artifacts is not None
    assert result.metrics is not None
    assert result.artifacts.merged_model_uri == "pvc://output/run/merged"
    assert result.artifacts.adapter_uri == "pvc://output/run/adapter"
    assert result.final_step == metrics["training"]["steps"]

    reports = read_jsonl(tmp_path / "progress.jsonl")
    assert reports
    assert {r["rank"] for r in reports} == {0}
    assert reports[-1]["step"] == reports[-1]["totalSteps"] == result.final_step
    assert any("evalLoss" in r for r in reports)
    assert all(r["tokensPerSecond"] > 0 for r in reports[1:])
    _accepted_by_the_operator(reports, result, config)

    # The merged folder reloaded from disk, on its own, answers a prompt it was trained on.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train = prepare_dataset(facts_dataset, fmt=DatasetFormat.AUTO, seed=42).splits.train
    probe = train[0].as_dicts()
    tokenizer = AutoTokenizer.from_pretrained(output / "merged")
    model = AutoModelForCausalLM.from_pretrained(output / "merged").eval()
    prompt = tokenizer.apply_chat_template(
        probe[:-1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    generated = model.generate(
        **prompt, max_new_tokens=24, do_sample=False, eos_token_id=tokenizer.eos_token_id
    )
    answer = tokenizer.decode(generated[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert answer == probe[-1]["content"]


def test_full_fine_tune_one_step_with_deepspeed_zero2_on_cpu(
    tmp_path: Path, tiny_model: Path, facts_dataset: Path
) -> None:
    deepspeed = tmp_path / "deepspeed.json"
    deepspeed.write_text(
        json.dumps(
            {
                "zero_optimization": {"stage": 2},
                "bf16": {"enabled": "auto"},
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
                "gradient_clipping": "auto",
                "zero_allow_untested_optimizer": True,
            }
        )
    )
    spec = {
        "method": "full",
        "deepspeed": {"zeroStage": 2},
        "hyperparameters": {
            "epochs": 1,
            "perDeviceBatchSize": 32,
            "learningRate": 1e-3,
            "warmupRatio": 0,  # with one step, any warmup means a zero learning rate
            "loggingSteps": 1,
        },
        "evaluation": {"metrics": ["loss"]},
    }
    config = render_config(tmp_path, model=tiny_model, dataset=facts_dataset, spec=spec, deepspeed=deepspeed)

    done = _torchrun(1, config, tmp_path)

    assert done.returncode == 0, done.stderr[-4000:]
    assert f"DeepSpeed enabled with {deepspeed} (ZeRO stage 2)" in done.stderr
    result = _result(tmp_path)
    assert result.final_step == 1
    assert result.outcome == "Succeeded"
    assert result.artifacts is not None
    assert result.artifacts.merged_model_uri == "pvc://output/run/model"
    model_dir = tmp_path / "output" / "model"
    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "tokenizer.json").is_file()
    checkpoint = latest_checkpoint(tmp_path / "output" / "checkpoints")
    assert checkpoint is not None
    assert any(p.name.startswith("global_step") for p in checkpoint.iterdir())
    # The exported weights differ from the base: one optimizer step happened.
    from safetensors.torch import load_file

    before, after = load_file(tiny_model / "model.safetensors"), load_file(model_dir / "model.safetensors")
    assert any(not before[name].equal(after[name]) for name in before if name in after)


def test_two_process_torchrun_completes_and_only_rank_zero_reports(
    tmp_path: Path, tiny_model: Path, facts_dataset: Path
) -> None:
    spec = _lora({"maxSamples": 2}, epochs=2, perDeviceBatchSize=4, loggingSteps=1)
    config = render_config(tmp_path, model=tiny_model, dataset=facts_dataset, spec=spec)

    done = _torchrun(2, config, tmp_path)

    assert done.returncode == 0, done.stderr[-4000:]
    assert "rank1" in done.stderr
    assert "rank0" in done.stderr
    reports = read_jsonl(tmp_path / "progress.jsonl")
    # 32 training records, 4 per process and 2 processes: 4 steps per epoch.
    assert [r["step"] for r in reports if "loss" in r][-1] == 8
    assert {r["rank"] for r in reports} == {0}
    assert reports[-1]["totalSteps"] == 8
    assert _result(tmp_path).final_step == 8
    # Each rank counts the tokens it trained on; the count is summed over both ranks.
    metrics = json.loads((tmp_path / "output" / "metrics.json").read_text())
    assert metrics["training"]["tokensSeen"] == 2 * _train_tokens(
        tiny_model, facts_dataset, 128, packing=False
    )


def _train_tokens(model: Path, dataset: Path, max_length: int, *, packing: bool) -> int:
    """Non-padding tokens in one epoch of the training split, encoded as the trainer does."""
    from transformers import AutoTokenizer

    from kubetune.trainer.chat import prepare_tokenizer
    from kubetune.trainer.dataset import build_dataset

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(model))
    train = prepare_dataset(dataset, fmt=DatasetFormat.AUTO, seed=42).splits.train
    return build_dataset(tokenizer, train, max_length=max_length, packing=packing).token_count()


def test_packed_lora_run_with_gradient_checkpointing_and_sdpa_learns_and_reports_tokens_per_second(
    tmp_path: Path, tiny_model: Path, facts_dataset: Path
) -> None:
    spec = {
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targetModules": ["all-linear"]},
        "dataset": {"uri": "pvc://data/facts.jsonl", "maxSeqLength": 64},
        "hyperparameters": {
            "precision": "fp32",
            "epochs": 10,
            "learningRate": 5e-3,
            "perDeviceBatchSize": 2,
            "warmupRatio": 0.05,
            "loggingSteps": 5,
            "packing": True,
            "gradientCheckpointing": True,
            "attnImplementation": "sdpa",
        },
        "evaluation": {"metrics": ["loss"]},
    }
    config = render_config(tmp_path, model=tiny_model, dataset=facts_dataset, spec=spec)

    done = run_trainer(["train", "--config", str(config)], tmp_path)

    assert done.returncode == 0, done.stderr[-4000:]
    metrics = json.loads((tmp_path / "output" / "metrics.json").read_text())
    history = [point["loss"] for point in metrics["training"]["lossHistory"]]
    assert history[-1] < 0.5 * history[0], history
    assert metrics["training"]["tokensSeen"] == 10 * _train_tokens(
        tiny_model, facts_dataset, 64, packing=True
    )
    reports = read_jsonl(tmp_path / "progress.jsonl")
    assert all(r["tokensPerSecond"] > 0 for r in reports[1:])
    assert not any("mfu" in r for r in reports)  # CPU: no peak to compare with
    assert "model FLOPs per token" in done.stderr


def test_killed_after_a_checkpoint_resumes_from_that_step(
    tmp_path: Path, tiny_model: Path, facts_dataset: Path
) -> None:
    spec = _lora(
        {"metrics": ["loss"]}, epochs=10, perDeviceBatchSize=4, saveSteps=4, evalSteps=40, loggingSteps=1
    )
    config = render_config(tmp_path, model=tiny_model, dataset=facts_dataset, spec=spec)
    checkpoints = tmp_path / "output" / "checkpoints"

    first = subprocess.Popen(
        [sys.executable, "-m", "kubetune.trainer", "train", "--config", str(config)],
        cwd=REPO,
        env=trainer_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while (
            recorded_checkpoint(checkpoints) is None and first.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert first.poll() is None, "training ended before it could be killed"
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    killed_at = recorded_checkpoint(checkpoints)
    assert killed_at is not None
    step = int(killed_at.name.removeprefix("checkpoint-"))
    assert 4 <= step < 80
    first_reports = read_jsonl(tmp_path / "progress.jsonl")

    second = run_trainer(
        ["train", "--config", str(config)],
        tmp_path,
        KUBETUNE_PROGRESS_FILE=str(tmp_path / "progress-2.jsonl"),
    )

    assert second.returncode == 0, second.stderr[-4000:]
    assert f"resuming from checkpoint {killed_at}" in second.stderr
    resumed = read_jsonl(tmp_path / "progress-2.jsonl")
    assert first_reports[0]["step"] <= 1 < resumed[0]["step"]
    assert min(r["step"] for r in resumed) > step
    assert resumed[-1]["step"] == 80
    manifest = json.loads((tmp_path / "output" / "kubetune-manifest.json").read_text())
    assert manifest["training"]["resumedFrom"] == str(killed_at)
    assert manifest["training"]["steps"] == 80


def recorded_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint a resume may use: complete and carrying its owner record (written by a
    callback just after the HF Trainer's own files: a kill in between leaves it unrecorded)."""
    if not directory.is_dir():
        return None
    found = [
        (int(match.group(1)), path)
        for path in directory.iterdir()
        if (match := CHECKPOINT.match(path.name))
        and (path / COMPLETE_MARKER).is_file()
        and (path / CHECKPOINT_FILE).is_file()
    ]
    return max(found)[1] if found else None
