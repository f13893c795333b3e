"""The trainer's self-reports: which are taken into status, and how a refusal names the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubetune.api.finetunejob import EvalMetrics, FineTuneJobSpec, Lineage, Progress
from kubetune.api.trainingconfig import TrainerResult
from kubetune.status.trainer_report import read_report, vet_result

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
GOOD = {
    "step": 30,
    "totalSteps": 120,
    "epoch": 0.75,
    "loss": 1.25,
    "evalLoss": 1.5,
    "learningRate": 2e-4,
    "tokensPerSecond": 812.5,
    "mfu": 0.41,
    "updatedAt": "2026-05-01T11:59:50Z",
}
SECRET = "sk-live-do-not-echo"


def data(attempt: int = 1, **progress: Any) -> dict[str, str]:
    return {"report.json": json.dumps({"attempt": attempt, "progress": {**GOOD, **progress}})}


def raw(text: str) -> dict[str, str]:
    return {"report.json": text}


def test_a_valid_report_becomes_the_status_progress() -> None:
    reading = read_report(data(), attempt=1, previous=None, now=NOW)
    assert reading.problem is None
    assert reading.progress == Progress(
        step=30,
        total_steps=120,
        epoch=0.75,
        loss=1.25,
        eval_loss=1.5,
        learning_rate=2e-4,
        tokens_per_second=812.5,
        mfu=0.41,
        updated_at=datetime(2026, 5, 1, 11, 59, 50, tzinfo=UTC),
        attempt=1,
    )


PREVIOUS = Progress(step=40, total_steps=120, attempt=1, percent=33, eta="1m0s")


@pytest.mark.parametrize(
    ("report", "previous", "problem"),
    [
        # Bounded numbers, finite floats.
        (data(mfu=1.5), None, "progress.mfu: Input should be less than or equal to 1"),
        (data(learningRate=-0.1), None, "progress.learningRate: Input should be greater than or equal to 0"),
        (data(loss=1e9), None, "progress.loss: Input should be less than or equal to 10000"),
        (
            raw('{"attempt": 1, "progress": {"step": 3, "loss": NaN}}'),
            None,
            "progress.loss: Input should be a finite number",
        ),
        (
            raw('{"attempt": 1, "progress": {"step": 3, "evalLoss": Infinity}}'),
            None,
            "progress.evalLoss: Input should be a finite number",
        ),
        (data(step=-1), None, "progress.step: Input should be greater than or equal to 0"),
        (
            data(step=10**12, totalSteps=None),
            None,
            "progress.step: Input should be less than or equal to 1000000000",
        ),
        (data(epoch=5000), None, "progress.epoch: Input should be less than or equal to 1000"),
        (
            data(tokensPerSecond=1e15),
            None,
            "progress.tokensPerSecond: Input should be less than or equal to 1000000000000",
        ),
        # step <= totalSteps.
        (data(step=121), None, "progress.step: 121 is above progress.totalSteps 120"),
        # Monotonic within an attempt.
        (data(step=39), PREVIOUS, "progress.step: went back from 40 to 39 within attempt 1"),
        # A report for an attempt that has not started.
        (data(attempt=2), None, "attempt: 2 is not the current attempt 1"),
        # Not what the operator fills in itself (percent, eta) and no artifacts: unknown fields are refused.
        (data(percent=100), None, "progress.percent: Extra inputs are not permitted"),
        (data(eta="0s"), None, "progress.eta: Extra inputs are not permitted"),
        (
            raw(json.dumps({"attempt": 1, "progress": GOOD, "artifacts": {"adapterUri": "s3://evil/x"}})),
            None,
            "artifacts: Extra inputs are not permitted",
        ),
        # String caps and shapes: nothing the image chose is echoed back.
        (
            raw(json.dumps({"attempt": 1, "progress": {**GOOD, "step": SECRET}})),
            None,
            "progress.step: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            raw(json.dumps({"attempt": 1, "progress": {**GOOD, SECRET: 1}})),
            None,
            "progress.<unknown key>: Extra inputs are not permitted",
        ),
        (
            raw(json.dumps({"attempt": 1, "progress": {**GOOD, "updatedAt": SECRET}})),
            None,
            "progress.updatedAt: Input should be a valid datetime or date, invalid character in year",
        ),
        (raw(SECRET), None, "report.json: not a JSON object"),
        (raw("[1, 2]"), None, "report: Input should be a valid dictionary or instance of TrainerReport"),
        (
            raw(json.dumps({"attempt": 1, "progress": GOOD, "pad": "x" * 5000})),
            None,
            "report.json: 5216 bytes, above the limit of 4096",
        ),
        (data(updatedAt="2026-05-01T12:30:00Z"), None, "progress.updatedAt: in the future"),
    ],
)
def test_an_invalid_report_is_refused_naming_the_field(
    report: dict[str, str], previous: Progress | None, problem: str
) -> None:
    reading = read_report(report, attempt=1, previous=previous, now=NOW)
    assert reading.problem == problem
    assert reading.progress == previous, "the last valid progress stays"
    assert SECRET not in problem


@pytest.mark.parametrize(
    ("report", "previous", "step"),
    [
        (None, PREVIOUS, 40),  # no report ConfigMap (yet)
        ({}, PREVIOUS, 40),  # created, rank 0 has not reported
        ({"other": "x"}, PREVIOUS, 40),  # other keys are not the report
        (data(attempt=0, step=100), PREVIOUS, 40),  # the previous gang's last report, before the new one's
        (data(step=40), PREVIOUS, 40),  # the same step again
        (data(step=41), PREVIOUS, 41),
        # A new attempt resumes from its last checkpoint, behind the previous attempt's last report.
        (data(step=20), PREVIOUS.model_copy(update={"attempt": 0}), 20),
        # Progress written before the attempt was recorded (an older operator): no history to compare.
        (data(step=20), PREVIOUS.model_copy(update={"attempt": None}), 20),
        (data(updatedAt="2026-05-01T12:04:00Z"), None, 30),  # within the allowed clock skew
    ],
)
def test_what_is_taken_and_what_is_quietly_left(
    report: dict[str, str] | None, previous: Progress | None, step: int
) -> None:
    reading = read_report(report, attempt=1, previous=previous, now=NOW)
    assert reading.problem is None
    assert reading.progress is not None
    assert reading.progress.step == step


def test_a_taken_report_resets_what_the_operator_computes() -> None:
    reading = read_report(data(step=41), attempt=1, previous=PREVIOUS, now=NOW)
    assert reading.progress is not None
    assert (reading.progress.percent, reading.progress.eta) == (0, None)  # compute_progress fills them


DIGEST = "sha256:" + "0f" * 32
SPEC = FineTuneJobSpec.model_validate(
    {
        "baseModel": {"uri": "hf://org/base"},
        "dataset": {"uri": "pvc://d/x.jsonl"},
        "output": {"uri": "pvc://o/x"},
    }
)
PINNED = SPEC.model_copy(update={"base_model": SPEC.base_model.model_copy(update={"revision": "v1.2"})})


def result(**fields: Any) -> TrainerResult:
    return TrainerResult.model_validate({"outcome": "Succeeded", **fields})


@pytest.mark.parametrize(
    ("fields", "spec", "problems", "kept"),
    [
        (
            {
                "metrics": {"evalLoss": 0.5, "perplexity": 1.65, "rougeL": 0.4, "bleu": 20, "samples": 200},
                "lineage": {"datasetDigest": DIGEST, "configHash": DIGEST, "baseModelRevision": "v1.2"},
                "testPrompts": ["Add 2 and 2."],
                "finalStep": 120,
            },
            PINNED,
            [],
            {"metrics.evalLoss": 0.5, "lineage.baseModelRevision": "v1.2", "finalStep": 120},
        ),
        (
            {"metrics": {"evalLoss": float("nan")}},
            SPEC,
            ["metrics.evalLoss: not a finite number in [0, 10000]"],
            {"metrics.evalLoss": None},
        ),
        (
            {"metrics": {"evalLoss": float("inf"), "bleu": 20}},
            SPEC,
            ["metrics.evalLoss: not a finite number in [0, 10000]"],
            {"metrics.bleu": 20},
        ),
        (
            {"metrics": {"evalLoss": -3.0}},
            SPEC,
            ["metrics.evalLoss: not a finite number in [0, 10000]"],
            {"metrics.evalLoss": None},
        ),
        (
            {"metrics": {"perplexity": float("inf")}},
            SPEC,
            ["metrics.perplexity: not a finite number in [0, 1e+300]"],
            {"metrics.perplexity": None},
        ),
        (
            {"lineage": {"datasetDigest": "sha256:ab"}},
            SPEC,
            ["lineage.datasetDigest: not sha256:<64 hex digits>"],
            {"lineage.datasetDigest": None},
        ),
        (
            {"lineage": {"configHash": "not-a-hash"}},
            SPEC,
            ["lineage.configHash: not a hex digest"],
            {"lineage.configHash": None},
        ),
        # Serving loads the base at the lineage's revision: a pinned spec's revision cannot be replaced.
        (
            {"lineage": {"baseModelRevision": "main"}},
            PINNED,
            ["lineage.baseModelRevision: not a revision name, or not spec.baseModel.revision"],
            {"lineage.baseModelRevision": "v1.2"},
        ),
        (
            {"lineage": {"baseModelRevision": "../../x"}},
            SPEC,
            ["lineage.baseModelRevision: not a revision name, or not spec.baseModel.revision"],
            {"lineage.baseModelRevision": None},
        ),
        (
            {"lineage": {"checkpoint": "ckpt\n[fake log line]"}},
            SPEC,
            ["lineage.checkpoint: contains control characters"],
            {"lineage.checkpoint": None},
        ),
        (
            {"testPrompts": ["ok", "x" * 2000, "  "]},
            SPEC,
            ["testPrompts: only 8 non-empty prompts of at most 1024 characters are kept"],
            {"testPrompts": ["ok"]},
        ),
        (
            {"testPrompts": [f"p{i}" for i in range(12)]},
            SPEC,
            ["testPrompts: only 8 non-empty prompts of at most 1024 characters are kept"],
            {"testPrompts": [f"p{i}" for i in range(8)]},
        ),
        ({"finalStep": 500}, SPEC, ["finalStep: not in [0, 120]"], {"finalStep": None}),
        # The champion-challenger gate reads the frozen-set scores: a forged perfect score is dropped.
        (
            {"frozenSet": {"metrics": {"evalLoss": -1.0}, "championMetrics": {"evalLoss": float("inf")}}},
            SPEC,
            [
                "frozenSet.metrics.evalLoss: not a finite number in [0, 10000]",
                "frozenSet.championMetrics.evalLoss: not a finite number in [0, 10000]",
            ],
            {"frozenSet.metrics.evalLoss": None, "frozenSet.championMetrics.evalLoss": None},
        ),
    ],
)
def test_the_final_result_keeps_only_fields_that_pass(
    fields: dict[str, Any], spec: FineTuneJobSpec, problems: list[str], kept: dict[str, Any]
) -> None:
    vetted, found = vet_result(result(**fields), spec, total_steps=120)
    assert found == problems
    wire = vetted.model_dump(by_alias=True, mode="python")
    for path, value in kept.items():
        node: Any = wire
        for part in path.split("."):
            node = node[part] if node is not None else None
        assert node == value, path


def test_a_vetted_result_serialises_into_valid_status_json() -> None:
    vetted, _ = vet_result(
        result(metrics={"evalLoss": float("nan"), "rougeL": 0.3}, lineage={"checkpoint": "c"}), SPEC, None
    )
    assert vetted.metrics == EvalMetrics(rouge_l=0.3)
    assert vetted.lineage == Lineage(checkpoint="c")
    json.dumps(vetted.model_dump(mode="json"), allow_nan=False)  # the API server refuses NaN


def test_reported_progress_never_takes_time_from_the_future() -> None:
    at = NOW + timedelta(minutes=6)
    reading = read_report(data(updatedAt=at.isoformat()), attempt=1, previous=None, now=NOW)
    assert reading.problem == "progress.updatedAt: in the future"
