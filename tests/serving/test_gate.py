"""evaluate_gate: offline metrics gate, both values in the message."""

from __future__ import annotations

from typing import Any

import pytest
from _pytest.mark import ParameterSet
from tests.serving.objects import variant

from kubetune.api.conditions import Reason
from kubetune.api.finetunejob import EvalMetrics
from kubetune.serving.gate import evaluate_gate


def metrics(**values: float) -> EvalMetrics:
    return EvalMetrics.model_validate(values)


PASSED = ("True", Reason.GATE_PASSED)
FAILED = ("False", Reason.GATE_FAILED)
PENDING = ("Unknown", Reason.PENDING)


def case(
    id_: str,
    gate: dict[str, Any] | None,
    by_variant: dict[str, EvalMetrics | None],
    verdict: tuple[str, Reason],
    *message_parts: str,
) -> ParameterSet:
    return pytest.param(gate, by_variant, *verdict, list(message_parts), id=id_)


def threshold(
    id_: str, metric: str, value: float, a: float | None, verdict: tuple[str, Reason], *parts: str
) -> ParameterSet:
    """A threshold gate on variant a, scored `a` on the gate's metric (None: not scored yet)."""
    scores = None if a is None else metrics(**{metric: a})
    return case(id_, {"metric": metric, "threshold": value}, {"a": scores}, verdict, *parts)


def must_beat(
    id_: str, metric: str, a: float, b: float | None, verdict: tuple[str, Reason], *parts: str
) -> ParameterSet:
    """Variant a must beat variant b, each scored on the gate's metric (b None: not scored yet)."""
    by_variant = {"a": metrics(**{metric: a}), "b": None if b is None else metrics(**{metric: b})}
    return case(id_, {"metric": metric, "mustBeat": "b"}, by_variant, verdict, *parts)


@pytest.mark.parametrize(
    ("gate", "by_variant", "status", "reason", "message_parts"),
    [
        case("no-gate", None, {"a": None}, PASSED, "no eval gate"),
        threshold("loss-under-threshold", "evalLoss", 1.0, 0.8, PASSED, "evalLoss 0.8 <= threshold 1"),
        threshold("loss-at-threshold-passes", "evalLoss", 1.0, 1.0, PASSED, "1 <= threshold 1"),
        threshold("loss-over-threshold", "evalLoss", 1.0, 1.25, FAILED, "evalLoss 1.25 > threshold 1"),
        threshold("rouge-under-threshold", "rougeL", 0.3, 0.25, FAILED, "rougeL 0.25 < threshold 0.3"),
        threshold("bleu-over-threshold", "bleu", 20, 31.5, PASSED, "bleu 31.5 >= threshold 20"),
        must_beat("must-beat-fails", "rougeL", 0.41, 0.45, FAILED, "0.41 does not beat variant b's 0.45"),
        must_beat("lower-loss-beats", "evalLoss", 0.9, 1.1, PASSED, "0.9 beats variant b's 1.1"),
        must_beat("a-tie-does-not-beat", "evalLoss", 1.1, 1.1, FAILED, "does not beat"),
        case(
            "both-checks-reported",
            {"metric": "rougeL", "threshold": 0.3, "mustBeat": "b"},
            {"a": metrics(rougeL=0.5), "b": metrics(rougeL=0.6)},
            FAILED,
            ">= threshold 0.3",
            "does not beat variant b's 0.6",
        ),
        threshold("metrics-not-yet-known", "rougeL", 0.3, None, PENDING, "waiting for rougeL"),
        # The gate's metric is missing from scores that did come.
        case(
            "metric-not-computed",
            {"metric": "bleu", "threshold": 1},
            {"a": metrics(evalLoss=1)},
            PENDING,
            "waiting for bleu",
        ),
        must_beat("other-not-yet-known", "rougeL", 0.5, None, PENDING, "0.5", "waiting for variant b"),
        case(
            "must-beat-unknown-variant",
            {"metric": "rougeL", "mustBeat": "zz"},
            {"a": metrics(rougeL=0.5)},
            FAILED,
            "zz, which does not exist",
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
