"""evaluate_gate: offline metrics gate, both values in the message."""

from __future__ import annotations

from typing import Any

import pytest
from tests.serving.objects import variant

from kubetune.api.conditions import Reason
from kubetune.api.finetunejob import EvalMetrics
from kubetune.serving.gate import evaluate_gate


def metrics(**values: float) -> EvalMetrics:
    return EvalMetrics.model_validate(values)


@pytest.mark.parametrize(
    ("gate", "by_variant", "status", "reason", "message_parts"),
    [
        pytest.param(None, {"a": None}, "True", Reason.GATE_PASSED, ["no eval gate"], id="no-gate"),
        pytest.param(
            {"metric": "evalLoss", "threshold": 1.0},
            {"a": metrics(evalLoss=0.8)},
            "True",
            Reason.GATE_PASSED,
            ["evalLoss 0.8 <= threshold 1"],
            id="loss-under-threshold",
        ),
        pytest.param(
            {"metric": "evalLoss", "threshold": 1.0},
            {"a": metrics(evalLoss=1.0)},
            "True",
            Reason.GATE_PASSED,
            ["1 <= threshold 1"],
            id="loss-at-threshold-passes",
        ),
        pytest.param(
            {"metric": "evalLoss", "threshold": 1.0},
            {"a": metrics(evalLoss=1.25)},
            "False",
            Reason.GATE_FAILED,
            ["evalLoss 1.25 > threshold 1"],
            id="loss-over-threshold",
        ),
        pytest.param(
            {"metric": "rougeL", "threshold": 0.3},
            {"a": metrics(rougeL=0.25)},
            "False",
            Reason.GATE_FAILED,
            ["rougeL 0.25 < threshold 0.3"],
            id="rouge-under-threshold",
        ),
        pytest.param(
            {"metric": "bleu", "threshold": 20},
            {"a": metrics(bleu=31.5)},
            "True",
            Reason.GATE_PASSED,
            ["bleu 31.5 >= threshold 20"],
            id="bleu-over-threshold",
        ),
        pytest.param(
            {"metric": "rougeL", "mustBeat": "b"},
            {"a": metrics(rougeL=0.41), "b": metrics(rougeL=0.45)},
            "False",
            Reason.GATE_FAILED,
            ["0.41 does not beat variant b's 0.45"],
            id="must-beat-fails",
        ),
        pytest.param(
            {"metric": "evalLoss", "mustBeat": "b"},
            {"a": metrics(evalLoss=0.9), "b": metrics(evalLoss=1.1)},
            "True",
            Reason.GATE_PASSED,
            ["0.9 beats variant b's 1.1"],
            id="lower-loss-beats",
        ),
        pytest.param(
            {"metric": "evalLoss", "mustBeat": "b"},
            {"a": metrics(evalLoss=1.1), "b": metrics(evalLoss=1.1)},
            "False",
            Reason.GATE_FAILED,
            ["does not beat"],
            id="a-tie-does-not-beat",
        ),
        pytest.param(
            {"metric": "rougeL", "threshold": 0.3, "mustBeat": "b"},
            {"a": metrics(rougeL=0.5), "b": metrics(rougeL=0.6)},
            "False",
            Reason.GATE_FAILED,
            [">= threshold 0.3", "does not beat variant b's 0.6"],
            id="both-checks-reported",
        ),
        pytest.param(
            {"metric": "rougeL", "threshold": 0.3},
            {"a": None},
            "Unknown",
            Reason.PENDING,
            ["waiting for rougeL"],
            id="metrics-not-yet-known",
        ),
        pytest.param(
            {"metric": "bleu", "threshold": 1},
            {"a": metrics(evalLoss=1)},
            "Unknown",
            Reason.PENDING,
            ["waiting for bleu"],
            id="metric-not-computed",
        ),
        pytest.param(
            {"metric": "rougeL", "mustBeat": "b"},
            {"a": metrics(rougeL=0.5), "b": None},
            "Unknown",
            Reason.PENDING,
            ["0.5", "waiting for variant b"],
            id="other-not-yet-known",
        ),
        pytest.param(
            {"metric": "rougeL", "mustBeat": "zz"},
            {"a": metrics(rougeL=0.5)},
            "False",
            Reason.GATE_FAILED,
            ["zz, which does not exist"],
            id="must-beat-unknown-variant",
        ),
    ],
)
def test_evaluate_gate(
    gate: dict[str, Any] | None,
    by_variant: dict[str, EvalMetrics | None],
    status: str,
    reason: Reason,
    message_parts: list[str],
) -> None:
    verdict = evaluate_gate(variant("a", gate=gate), by_variant)
    assert verdict.status == status
    assert verdict.reason is reason
    assert verdict.passed is (status == "True")
    for part in message_parts:
        assert part in verdict.message
