"""The output layout is a contract between trainer and operator; both derive artifact URIs from it."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.api.finetunejob import Artifacts, FineTuneJobSpec
from kubetune.api.trainingconfig import output_artifacts, trusted_artifacts

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
