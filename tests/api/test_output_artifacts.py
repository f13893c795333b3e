"""The output layout is a contract between trainer and operator; both derive artifact URIs from it."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.api.finetunejob import Artifacts, EvalMetrics, FineTuneJobSpec, FrozenSetScores
from kubetune.api.trainingconfig import (
    frozen_set_uri,
    output_artifacts,
    trusted_artifacts,
    trusted_frozen_set,
)

BASE: dict[str, Any] = {
    "baseModel": {"uri": "Qwen/Qwen2.5-0.5B"},
    "dataset": {"uri": "pvc://data/train.jsonl"},
    "output": {"uri": "pvc://models/run/"},
}


@pytest.mark.parametrize(
    ("method", "merge", "adapter", "merged"),
    [
        ("lora", False, "pvc://models/run/adapter", None),
        ("lora", True, "pvc://models/run/adapter", "pvc://models/run/merged"),
        ("qlora", True, "pvc://models/run/adapter", "pvc://models/run/merged"),
        ("full", False, None, "pvc://models/run/model"),
    ],
)
def test_output_artifacts(method: str, merge: bool, adapter: str | None, merged: str | None) -> None:
    spec = FineTuneJobSpec.model_validate(
        {**BASE, "method": method, "output": {"uri": "pvc://models/run/", "mergeAdapter": merge}}
    )
    artifacts = output_artifacts(spec)
    assert artifacts.adapter_uri == adapter
    assert artifacts.merged_model_uri == merged
    assert artifacts.manifest_uri == "pvc://models/run/kubetune-manifest.json"
    assert artifacts.base_model_uri == "Qwen/Qwen2.5-0.5B"


def test_reported_locations_never_replace_the_layout() -> None:
    spec = FineTuneJobSpec.model_validate(
        {**BASE, "output": {"uri": "pvc://models/run/", "mergeAdapter": True}}
    )
    forged = Artifacts(adapter_uri="s3://evil/a", merged_model_uri=None, base_model_uri="hf://evil/base")
    trusted = trusted_artifacts(spec, forged)
    assert trusted.adapter_uri == "pvc://models/run/adapter"
    assert trusted.merged_model_uri is None, "the run said it produced no merged model"
    assert trusted.base_model_uri == "Qwen/Qwen2.5-0.5B"
    assert trusted_artifacts(spec, None) == output_artifacts(spec)


FROZEN = {"frozenSet": {"uri": "pvc://eval/frozen.jsonl"}}
CHAMPION = {"champion": {"name": "w-1", "adapterUri": "pvc://models/w-1/adapter"}}


@pytest.mark.parametrize(
    ("evaluation", "uri"),
    [
        pytest.param({}, None, id="no-frozen-set"),
        pytest.param(FROZEN, "pvc://eval/frozen.jsonl", id="given"),
        pytest.param({"exportTestSplit": True}, "pvc://models/run/frozen-eval.jsonl", id="exported"),
        pytest.param({**FROZEN, "exportTestSplit": True}, "pvc://eval/frozen.jsonl", id="given-wins"),
    ],
)
def test_frozen_set_uri(evaluation: dict[str, Any], uri: str | None) -> None:
    spec = FineTuneJobSpec.model_validate({**BASE, "evaluation": evaluation})
    assert frozen_set_uri(spec) == uri


def test_reported_frozen_set_scores_keep_the_specs_file_and_champion() -> None:
    spec = FineTuneJobSpec.model_validate({**BASE, "evaluation": {**FROZEN, **CHAMPION}})
    forged = FrozenSetScores(
        uri="pvc://elsewhere/easy.jsonl",
        metrics=EvalMetrics(eval_loss=0.5),
        champion="someone-else",
        champion_metrics=EvalMetrics(eval_loss=0.9),
    )
    trusted = trusted_frozen_set(spec, forged)
    assert trusted is not None
    assert (trusted.uri, trusted.champion) == ("pvc://eval/frozen.jsonl", "w-1")
    assert trusted.metrics == EvalMetrics(eval_loss=0.5)
    assert trusted.champion_metrics == EvalMetrics(eval_loss=0.9)
    # Without a champion in the spec, reported champion scores are dropped.
    alone = FineTuneJobSpec.model_validate({**BASE, "evaluation": FROZEN})
    dropped = trusted_frozen_set(alone, forged)
    assert dropped is not None
    assert (dropped.champion, dropped.champion_metrics) == (None, None)
    # A lost report: the file is known, the scores are not, and the message says so.
    lost = trusted_frozen_set(spec, None)
    assert lost is not None
    assert (lost.uri, lost.metrics) == ("pvc://eval/frozen.jsonl", None)
    assert "no frozen-set scores" in lost.message
    assert trusted_frozen_set(FineTuneJobSpec.model_validate(BASE), forged) is None
