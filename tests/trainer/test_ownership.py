"""Outputs and checkpoints are owned: a job never writes into, or resumes from, another job's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from tests.trainer.conftest import render_config, run_trainer

from kubetune.api.trainingconfig import EXIT_CONFIG_ERROR, TrainerResult, TrainingConfig
from kubetune.trainer.checkpoints import COMPLETE_MARKER
from kubetune.trainer.config import load_config
from kubetune.trainer.ownership import (
    CHECKPOINT_FILE,
    OWNER_FILE,
    OutputOwnedError,
    Owner,
    claim_output,
    record_checkpoint,
    resumable_checkpoint,
    training_hash,
)

SHORT_SPEC: dict[str, Any] = {
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targetModules": ["all-linear"]},
    "hyperparameters": {
        "precision": "fp32",
        "epochs": 1,
        "perDeviceBatchSize": 8,
        "loggingSteps": 1,
        "saveSteps": 2,
        "evalSteps": 100,
    },
    "evaluation": {"metrics": ["loss"]},
}


def config_for(directory: Path, uid: str, tiny_model: Path, dataset: Path, output: Path, **spec: Any) -> Path:
    """A rendered config for job `uid` writing to `output` (the operator renders uid from metadata)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = render_config(directory, model=tiny_model, dataset=dataset, spec={**SHORT_SPEC, **spec})
    raw = json.loads(path.read_text())
    raw["jobUid"] = uid
    raw["jobName"] = f"job-{uid}"
    raw["paths"]["outputDir"] = str(output)
    path.write_text(json.dumps(raw))
    return path


def owner(uid: str, **hp: Any) -> Owner:
    config = TrainingConfig.model_validate(
        {
            "jobName": f"job-{uid}",
            "jobUid": uid,
            "namespace": "ns",
            "spec": {
                "baseModel": {"uri": "pvc://m/x"},
                "dataset": {"uri": "pvc://d/x.jsonl"},
                "output": {"uri": "pvc://o/x"},
                "hyperparameters": hp,
            },
            "paths": {"baseModel": "/m", "dataset": "/d", "outputDir": "/o"},
            "progress": {"namespace": "ns", "name": f"job-{uid}"},
            "outputUri": "pvc://o/x",
        }
    )
    return Owner.of(config)


def checkpoint(directory: Path, step: int, written_by: Owner | None, *, complete: bool = True) -> Path:
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / COMPLETE_MARKER).write_text("{}")
    if written_by is not None:
        record_checkpoint(path, written_by)
    return path


def test_a_fresh_folder_is_claimed_and_its_owner_may_come_back(tmp_path: Path) -> None:
    me = owner("uid-a")
    claim_output(tmp_path / "out", me)
    assert json.loads((tmp_path / "out" / OWNER_FILE).read_text())["jobUid"] == "uid-a"
    (tmp_path / "out" / "checkpoints").mkdir()
    claim_output(tmp_path / "out", me)  # a restart of the same job


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: claim_output(root, owner("uid-a")), "belongs to FineTuneJob ns/job-uid-a"),
        (lambda root: (root / "adapter").mkdir(parents=True), "already holds adapter"),
    ],
    ids=["another job's folder", "files without an owner"],
)
def test_a_folder_that_is_not_the_jobs_is_refused(tmp_path: Path, setup: Any, message: str) -> None:
    root = tmp_path / "out"
    setup(root)
    with pytest.raises(OutputOwnedError, match=message):
        claim_output(root, owner("uid-b"))


def test_training_hash_ignores_run_policy_but_not_training_settings() -> None:
    base = owner("u").training_hash
    assert owner("u", learningRate=0.1).training_hash != base
    config = TrainingConfig.model_validate(
        {
            "jobName": "job-u",
            "jobUid": "u",
            "namespace": "ns",
            "spec": {
                "baseModel": {"uri": "pvc://m/x"},
                "dataset": {"uri": "pvc://d/x.jsonl"},
                "output": {"uri": "pvc://o/x"},
                "runPolicy": {"suspend": True, "backoffLimit": 9},
                "image": {"image": "other"},
            },
            "paths": {"baseModel": "/m", "dataset": "/d", "outputDir": "/o"},
            "progress": {"namespace": "ns", "name": "job-u"},
            "outputUri": "pvc://o/x",
        }
    )
    assert training_hash(config) == base


def test_only_the_jobs_own_complete_checkpoints_are_resumed(tmp_path: Path) -> None:
    me, stranger, changed = owner("uid-a"), owner("uid-b"), owner("uid-a", learningRate=0.5)
    mine = checkpoint(tmp_path, 10, me)
    checkpoint(tmp_path, 20, stranger)
    checkpoint(tmp_path, 30, changed)
    checkpoint(tmp_path, 40, None)  # written before owners were recorded, or by hand
    checkpoint(tmp_path, 50, me, complete=False)  # the pod died while saving
    assert resumable_checkpoint(tmp_path, me) == mine
    assert resumable_checkpoint(tmp_path, stranger) == tmp_path / "checkpoint-20"
    assert resumable_checkpoint(tmp_path / "missing", me) is None


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_a_second_job_on_the_same_output_is_refused_and_the_first_jobs_files_stay(
    tmp_path: Path, tiny_model: Path, facts_dataset: Path
) -> None:
    output = tmp_path / "shared-output"
    first = config_for(tmp_path / "a", "uid-a", tiny_model, facts_dataset, output)
    done = run_trainer(["train", "--config", str(first)], tmp_path / "a")
    assert done.returncode == 0, done.stderr[-4000:]
    checkpoints = sorted((output / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "the first job saved no checkpoint"
    for path in checkpoints:
        record = json.loads((path / CHECKPOINT_FILE).read_text())
        assert record == {"jobUid": "uid-a", "trainingHash": training_hash(load_config(first))}
    before = _tree_digest(output)

    second = config_for(tmp_path / "b", "uid-b", tiny_model, facts_dataset, output)
    refused = run_trainer(["train", "--config", str(second)], tmp_path / "b")

    assert refused.returncode == EXIT_CONFIG_ERROR, refused.stderr[-4000:]
    result = TrainerResult.model_validate_json((tmp_path / "b" / "termination-log").read_text())
    assert result.outcome == "Failed"
    assert "belongs to FineTuneJob default/job-uid-a (uid uid-a)" in result.message
    assert "resuming from checkpoint" not in refused.stderr
    assert _tree_digest(output) == before
