"""Incremental training (spec.initFrom): replay sampling, the adapter checks, and two real runs on the
tiny model where the second continues the first's adapter."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from tests.trainer.conftest import FACTS, PHRASINGS, render_config, run_trainer, write_jsonl

from kubetune.api.finetunejob import LoraConfig
from kubetune.api.trainingconfig import TRAIN_RECORDS_FILE, InitFromConfig, TrainerResult, TrainingConfig
from kubetune.trainer.data import Conversation, Message
from kubetune.trainer.errors import ConfigError, DataError
from kubetune.trainer.incremental import (
    check_adapter,
    load_replay_records,
    replay_count,
    replay_sample,
    write_train_records,
)


def _conversation(index: int, line: int | None = None) -> Conversation:
    return Conversation(
        (Message("user", f"question {index}"), Message("assistant", f"answer {index}")),
        line if line is not None else index + 1,
    )


EARLIER = [_conversation(i) for i in range(100)]


@pytest.mark.parametrize(
    ("fraction", "new_records", "expected"),
    [(0.0, 50, 0), (0.2, 50, 10), (0.5, 7, 4), (1.0, 30, 30), (0.25, 1, 0)],
)
def test_replay_count_is_the_fraction_of_the_new_training_records(
    fraction: float, new_records: int, expected: int
) -> None:
    assert replay_count(fraction, new_records) == expected


def test_replay_sample_has_the_asked_count_and_is_the_same_for_the_same_seed_in_any_file_order() -> None:
    first = replay_sample(EARLIER, count=20, exclude=[], seed=7)
    shuffled = EARLIER[:]
    random.Random(1).shuffle(shuffled)
    again = replay_sample(shuffled, count=20, exclude=[], seed=7)

    assert len(first) == 20
    assert len({c.identity() for c in first}) == 20
    assert [c.identity() for c in again] == [c.identity() for c in first]
    assert [c.line for c in first] == sorted(c.line for c in first)  # file order, for readable reports


def test_another_seed_draws_another_sample() -> None:
    one = {c.identity() for c in replay_sample(EARLIER, count=20, exclude=[], seed=7)}
    other = {c.identity() for c in replay_sample(EARLIER, count=20, exclude=[], seed=8)}
    assert one != other


def test_replay_never_draws_records_of_the_new_data_and_stops_at_what_is_available() -> None:
    new = [_conversation(i, line=1) for i in range(90)]  # same content as earlier records 0..89

    sample = replay_sample(EARLIER, count=20, exclude=new, seed=7)

    assert sorted(c.identity() for c in sample) == sorted(c.identity() for c in EARLIER[90:])
    assert replay_sample(EARLIER, count=0, exclude=[], seed=7) == []


def _replay_config(
    folder: Path, job: str, fraction: float, records: list[Conversation] | None = None
) -> InitFromConfig:
    """spec.initFrom as the trainer gets it for the earlier `job`, whose output is `folder`: its training
    records there are `records` (none written when None)."""
    path = folder / TRAIN_RECORDS_FILE
    if records is not None:
        write_train_records(path, records)
    return InitFromConfig(
        finetune_job=job,
        output_uri=f"pvc://out/{job}",
        adapter_uri=f"pvc://out/{job}/adapter",
        adapter_path=str(folder / "adapter"),
        replay_records_path=str(path),
        replay_fraction=fraction,
    )


def test_train_records_round_trip_through_the_replay_loader(tmp_path: Path) -> None:
    config = _replay_config(tmp_path, "run-1", 0.5, EARLIER[:5])

    loaded = load_replay_records(config, max_seq_length=2048, token_counter=None)

    assert [c.identity() for c in loaded] == [c.identity() for c in EARLIER[:5]]


def test_replaying_from_a_job_that_recorded_no_training_records_is_a_data_error(tmp_path: Path) -> None:
    config = _replay_config(tmp_path, "old-run", 0.5)
    with pytest.raises(
        DataError, match=r"spec\.initFrom\.replayFraction: .* FineTuneJob old-run recorded no"
    ):
        load_replay_records(config, max_seq_length=2048, token_counter=None)


def test_replayed_records_over_this_jobs_token_limit_are_left_out(tmp_path: Path) -> None:
    config = _replay_config(tmp_path, "run-1", 1.0, EARLIER[:10])
    # A stand-in token count: records 5..9 are "too long" for this job.
    long = {c.identity() for c in EARLIER[5:10]}

    loaded = load_replay_records(
        config, max_seq_length=100, token_counter=lambda c: 1000 if c.identity() in long else 10
    )

    assert [c.identity() for c in loaded] == [c.identity() for c in EARLIER[:5]]


def test_an_adapter_of_another_shape_is_refused_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"]})
    )
    check_adapter(tmp_path, LoraConfig(r=8, alpha=16, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(ConfigError, match=r"lora\.r 8, the spec 16"):
        check_adapter(tmp_path, LoraConfig(r=16, alpha=16, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(ConfigError, match=r"lora\.targetModules"):
        check_adapter(tmp_path, LoraConfig(r=8, alpha=16, target_modules=["q_proj"]))


# --- two real runs --------------------------------------------------------------------------------------

RUN_SPEC: dict[str, Any] = {
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targetModules": ["all-linear"]},
    "hyperparameters": {
        "precision": "fp32",
        "epochs": 15,
        "learningRate": 5e-3,
        "perDeviceBatchSize": 8,
        "warmupRatio": 0.05,
        "loggingSteps": 1,
        "lrScheduler": "constant_with_warmup",
    },
    "evaluation": {"metrics": ["loss"]},
}


def _facts(phrasings: list[str]) -> list[dict[str, str]]:
    return [
        {"instruction": p.format(country), "input": "", "output": f"The capital of {country} is {city}."}
        for country, city in FACTS
        for p in phrasings
    ]


def _losses(output: Path) -> list[float]:
    metrics = json.loads((output / "metrics.json").read_text())
    return [point["loss"] for point in metrics["training"]["lossHistory"]]


def _with_init_from(config_path: Path, earlier_output: Path, *, replay: float, scale: float) -> None:
    """Render spec.initFrom as the operator resolves it (kubetune.builders.finetunejob)."""
    raw = json.loads(config_path.read_text())
    raw["spec"]["initFrom"] = {
        "finetuneJobRef": {"name": "run-1"},
        "replayFraction": replay,
        "learningRateScale": scale,
    }
    raw["initFrom"] = {
        "finetuneJob": "run-1",
        "outputUri": "pvc://output/run-1",
        "adapterUri": "pvc://output/run-1/adapter",
        "adapterPath": str(earlier_output / "adapter"),
        "replayRecordsPath": str(earlier_output / TRAIN_RECORDS_FILE),
        "replayFraction": replay,
        "learningRateScale": scale,
    }
    config_path.write_text(json.dumps(TrainingConfig.model_validate(raw).to_wire()))


@pytest.mark.slow
def test_a_run_continuing_an_adapter_starts_from_its_loss_not_the_base_models(
    tmp_path: Path, tiny_model: Path
) -> None:
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    run1.mkdir()
    run2.mkdir()
    # Run 1 learns the facts in three phrasings; run 2's new data asks them in a fourth.
    data1 = write_jsonl(run1 / "week1.jsonl", _facts(PHRASINGS[:3]))
    data2 = write_jsonl(run2 / "week2.jsonl", _facts(PHRASINGS[3:]))
    config1 = render_config(run1, model=tiny_model, dataset=data1, spec=RUN_SPEC)
    done = run_trainer(["train", "--config", str(config1)], run1)
    assert done.returncode == 0, done.stderr[-4000:]
    losses1 = _losses(run1 / "output")
    train1 = (run1 / "output" / TRAIN_RECORDS_FILE).read_text().splitlines()
    assert len(train1) == 24  # 30 records, 3 validation, 3 test

    spec2 = {**RUN_SPEC, "hyperparameters": {**RUN_SPEC["hyperparameters"], "epochs": 1}}
    config2 = render_config(run2, model=tiny_model, dataset=data2, spec=spec2)
    _with_init_from(config2, run1 / "output", replay=0.5, scale=0.5)
    done = run_trainer(["train", "--config", str(config2)], run2)
    assert done.returncode == 0, done.stderr[-4000:]
    losses2 = _losses(run2 / "output")

    print(
        f"\nrun 1: step-1 loss {losses1[0]:.4f}, final loss {losses1[-1]:.4f} ({len(losses1)} steps); "
        f"run 2 (from run 1's adapter): step-1 loss {losses2[0]:.4f}"
    )
    assert losses1[-1] < 0.2 * losses1[0]  # run 1 learned
    # Run 2's first step sees run 1's adapter at work: far below where run 1 started, near where it ended.
    assert losses2[0] < 0.25 * losses1[0]
    assert losses2[0] < losses1[-1] + 0.25 * (losses1[0] - losses1[-1])

    result = TrainerResult.model_validate_json((run2 / "termination-log").read_text())
    assert result.lineage is not None
    assert result.lineage.init_from is not None
    init = result.lineage.init_from
    assert (init.finetune_job, init.adapter_uri) == ("run-1", "pvc://output/run-1/adapter")
    assert init.adapter_digest is not None
    assert init.adapter_digest.startswith("sha256:")
    # 8 new training records (10, less 1 validation and 1 test) and half as many replayed.
    assert init.replayed_records == 4
    assert len((run2 / "output" / TRAIN_RECORDS_FILE).read_text().splitlines()) == 8 + 4
    manifest = json.loads((run2 / "output" / "kubetune-manifest.json").read_text())
    assert manifest["lineage"]["initFrom"]["finetuneJob"] == "run-1"
