"""Offline eval gate: a fine-tuned variant is rolled out only if its test metrics pass. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kubetune.api.common import ConditionStatus
from kubetune.api.conditions import Reason
from kubetune.api.finetunejob import EvalMetrics
from kubetune.api.modeldeployment import EvalGate, Variant

# The spec's metric names → EvalMetrics attributes, and whether a lower value is better.
_METRICS: dict[str, tuple[str, bool]] = {
    "evalLoss": ("eval_loss", True),
    "rougeL": ("rouge_l", False),
    "bleu": ("bleu", False),
}


@dataclass(frozen=True)
class GateVerdict:
    status: ConditionStatus  # "Unknown" while the metrics are not available yet
    reason: Reason
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "True"


def _value(metrics: EvalMetrics | None, metric: str) -> float | None:
    if metrics is None:
        return None
    value = getattr(metrics, _METRICS[metric][0])
    return None if value is None else float(value)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _check_threshold(gate: EvalGate, value: float) -> tuple[bool, str]:
    assert gate.threshold is not None
    lower_is_better = _METRICS[gate.metric][1]
    ok = value <= gate.threshold if lower_is_better else value >= gate.threshold
    relation = ("<=" if ok else ">") if lower_is_better else (">=" if ok else "<")
    return ok, f"{gate.metric} {_fmt(value)} {relation} threshold {_fmt(gate.threshold)}"


def _check_must_beat(gate: EvalGate, value: float, other: float) -> tuple[bool, str]:
    lower_is_better = _METRICS[gate.metric][1]
    ok = value < other if lower_is_better else value > other
    verb = "beats" if ok else "does not beat"
    return ok, f"{gate.metric} {_fmt(value)} {verb} variant {gate.must_beat}'s {_fmt(other)}"


def evaluate_gate(variant: Variant, metrics_by_variant: Mapping[str, EvalMetrics | None]) -> GateVerdict:
    """Judge `variant.gate` on the FineTuneJob metrics of each variant.

    `metrics_by_variant` has a key for every variant of the spec, None while its metrics are not
    known (job running, or the variant serves a plain URI); a `mustBeat` name that is not a key is
    a spec error. A lower evalLoss is better; higher rougeL and bleu are better. `mustBeat` is strict.
    """
    gate = variant.gate
    if gate is None:
        return GateVerdict("True", Reason.GATE_PASSED, "no eval gate configured")
    value = _value(metrics_by_variant.get(variant.name), gate.metric)
    if value is None:
        return GateVerdict(
            "Unknown", Reason.PENDING, f"waiting for {gate.metric} of variant {variant.name}'s FineTuneJob"
        )
    checks: list[tuple[bool, str]] = []
    if gate.threshold is not None:
        checks.append(_check_threshold(gate, value))
    if gate.must_beat is not None:
        if gate.must_beat not in metrics_by_variant:
            return GateVerdict(
                "False", Reason.GATE_FAILED, f"mustBeat names variant {gate.must_beat}, which does not exist"
            )
        other = _value(metrics_by_variant.get(gate.must_beat), gate.metric)
        if other is None:
            return GateVerdict(
                "Unknown",
                Reason.PENDING,
                f"{gate.metric} {_fmt(value)}; waiting for variant {gate.must_beat}'s value to compare",
            )
        checks.append(_check_must_beat(gate, value, other))
    message = "; ".join(text for _, text in checks)
    if all(ok for ok, _ in checks):
        return GateVerdict("True", Reason.GATE_PASSED, message)
    return GateVerdict("False", Reason.GATE_FAILED, message)
