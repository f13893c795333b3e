"""`launch` keeps the contract exit codes that torchrun reports as 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kubetune.trainer.launch import exit_code_for, launch


@pytest.mark.parametrize(
    ("returncode", "message", "expected"),
    [
        (0, None, 0),
        (1, None, 1),
        (1, json.dumps({"outcome": "Failed", "reason": "ConfigError", "message": "qlora needs CUDA"}), 40),
        (
            1,
            json.dumps({"outcome": "Failed", "reason": "InvalidData", "message": "d.jsonl:3: output: empty"}),
            41,
        ),
        (1, json.dumps({"outcome": "Failed", "reason": "TrainingFailed", "message": "NCCL timeout"}), 1),
        (137, "not json", 137),
        (0, json.dumps({"outcome": "Failed", "reason": "ConfigError"}), 0),
    ],
)
def test_exit_code_for(returncode: int, message: str | None, expected: int) -> None:
    assert exit_code_for(returncode, message) == expected


def test_launch_maps_a_recorded_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(log))
    # Stands in for torchrun: the worker recorded ConfigError, the launcher exits 1.
    script = (
        "import json, pathlib, sys; "
        f"pathlib.Path({str(log)!r}).write_text("
        "json.dumps({'outcome': 'Failed', 'reason': 'ConfigError'})); "
        "sys.exit(1)"
    )
    assert launch([sys.executable, "-c", script]) == 40


def test_launch_passes_success_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(tmp_path / "missing"))
    assert launch([sys.executable, "-c", "pass"]) == 0
