"""The command line: fast help, validate's exit codes and termination message."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.trainer.conftest import REPO, render_config, run_trainer, write_jsonl

from kubetune.api.trainingconfig import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR, TrainerResult


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["validate", "--help"]])
def test_help_works_without_importing_torch(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from kubetune.trainer.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'deepspeed') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m kubetune.trainer" in done.stdout


def test_validate_fails_with_exit_41_and_the_lines_in_the_termination_message(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(
        '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n{"instruction": "d", "output": ""}\n'
    )
    config = render_config(tmp_path, model=tmp_path / "not-staged", dataset=data)

    done = run_trainer(["validate", "--config", str(config)], tmp_path, timeout=120)

    assert done.returncode == EXIT_DATA_ERROR, done.stderr
    result = TrainerResult.model_validate_json((tmp_path / "termination-log").read_text())
    assert (result.outcome, result.reason) == ("Failed", "InvalidData")
    assert result.message.splitlines()[1:] == [
        "data.jsonl:2: output: missing field",
        "data.jsonl:3: output: empty",
    ]
    assert "data.jsonl:2: output: missing field" in done.stderr


def test_validate_succeeds_and_reports_the_split(tmp_path: Path) -> None:
    records = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)] + [
        {"instruction": "q0", "output": "a0"}
    ]
    config = render_config(
        tmp_path, model=tmp_path / "not-staged", dataset=write_jsonl(tmp_path / "d.jsonl", records)
    )

    done = run_trainer(["validate", "--config", str(config)], tmp_path, timeout=120)

    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "termination-log").read_text())
    assert result["outcome"] == "Succeeded"
    assert result["message"] == (
        "d.jsonl: 11 records (alpaca), 0 invalid, 1 duplicates removed; split 8/1/1 train/validation/test"
    )
    # The digest a FineTuneSchedule's probe compares with the last successful run's.
    digest = hashlib.sha256((tmp_path / "d.jsonl").read_bytes()).hexdigest()
    assert result["lineage"] == {"datasetDigest": f"sha256:{digest}"}


@pytest.mark.parametrize("command", ["validate", "train"])
def test_unreadable_config_exits_40(tmp_path: Path, command: str) -> None:
    done = run_trainer([command, "--config", str(tmp_path / "missing.json")], tmp_path, timeout=120)
    assert done.returncode == EXIT_CONFIG_ERROR
    result = TrainerResult.model_validate_json((tmp_path / "termination-log").read_text())
    assert (result.outcome, result.reason) == ("Failed", "ConfigError")
