"""Fixtures for the trainer tests: one tiny model per session, small datasets, rendered configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubetune.api.trainingconfig import TrainingConfig
from kubetune.devcluster.tinymodel import create_tiny_model

REPO = Path(__file__).resolve().parents[2]

# Ten facts the LoRA test memorises; four phrasings each keep the records distinct after de-duplication.
FACTS = [
    ("Xland", "Yburg"),
    ("Quorvia", "Belmont"),
    ("Ostrava Minor", "Kettle Bay"),
    ("Zentar", "Lumen"),
    ("Parvia", "Dunmore"),
    ("Velland", "Orrick"),
    ("Marrow Isles", "Saltpoint"),
    ("Ebonreach", "Tarn"),
    ("Cindral", "Highmoor"),
    ("Norhaven", "Frostgate"),
]
PHRASINGS = [
    "What is the capital of {}?",
    "Name the capital city of {}.",
    "Which city is the capital of {}?",
    "Tell me the capital of {}.",
]


def fact_records() -> list[dict[str, str]]:
    return [
        {
            "instruction": phrasing.format(country),
            "input": "",
            "output": f"The capital of {country} is {city}.",
        }
        for country, city in FACTS
        for phrasing in PHRASINGS
    ]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def facts_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "facts.jsonl", fact_records())


ConfigFactory = Callable[..., Path]


def render_config(
    directory: Path,
    *,
    model: Path,
    dataset: Path,
    spec: dict[str, Any] | None = None,
    deepspeed: Path | None = None,
) -> Path:
    """Write a TrainingConfig the way the operator renders it (validated by the same model)."""
    spec_wire: dict[str, Any] = {
        "baseModel": {"uri": "pvc://models/tiny"},
        "dataset": {"uri": "pvc://data/facts.jsonl", "maxSeqLength": 128},
        "output": {"uri": "pvc://output/run"},
        "hyperparameters": {"precision": "fp32", "loggingSteps": 1},
        "evaluation": {"maxSamples": 4},
        **(spec or {}),
    }
    config = TrainingConfig.model_validate(
        {
            "jobName": "tiny",
            "namespace": "default",
            "spec": spec_wire,
            "paths": {
                "baseModel": str(model),
                "dataset": str(dataset),
                "outputDir": str(directory / "output"),
                "deepspeedConfig": str(deepspeed) if deepspeed else None,
            },
            "progress": {"namespace": "default", "name": "tiny", "minIntervalSeconds": 0},
            "outputUri": "pvc://output/run",
        }
    )
    path = directory / "config.json"
    path.write_text(config.model_dump_json(by_alias=True, exclude_none=True), encoding="utf-8")
    return path


def trainer_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "KUBECONFIG"}}
    env.update(
        {
            "KUBETUNE_TERMINATION_LOG": str(tmp / "termination-log"),
            "KUBETUNE_PROGRESS_FILE": str(tmp / "progress.jsonl"),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "KUBECONFIG": str(tmp / "no-kubeconfig"),
        }
    )
    env.update(extra)
    return env


def run_trainer(
    args: list[str], tmp: Path, *, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubetune.trainer", *args],
        cwd=REPO,
        env=trainer_env(tmp, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
