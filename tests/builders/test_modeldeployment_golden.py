"""Rendered children of 3 representative ModelDeployments vs reviewed files in tests/golden/modeldeployment/.

Each input holds the ModelDeployment followed by the FineTuneJobs it references. Regenerate with
`KUBETUNE_UPDATE_GOLDEN=1 pytest tests/builders/test_modeldeployment_golden.py`, then review the diff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.golden import assert_golden

from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.builders.common import Manifest
from kubetune.builders.modeldeployment import build_pod_monitor, build_variant_children
from kubetune.serving.resolution import resolve_variant_model

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "modeldeployment"
CASES = sorted(p.stem for p in (GOLDEN / "inputs").glob("*.yaml"))


def children(case: str) -> list[Manifest]:
    mdep, *jobs = yaml.safe_load_all((GOLDEN / "inputs" / f"{case}.yaml").read_text())
    by_name: dict[str, Any] = {job["metadata"]["name"]: job for job in jobs}
    out: list[Manifest] = []
    for variant in ModelDeploymentSpec.model_validate(mdep["spec"]).variants:
        resolution = resolve_variant_model(variant, by_name)
        assert resolution.ready, resolution.message
        out += build_variant_children(mdep, variant, resolution)
    return [*out, build_pod_monitor(mdep)]


def render(case: str) -> str:
    header = (
        f"# Rendered from inputs/{case}.yaml by build_variant_children + build_pod_monitor. "
        "Regenerate: KUBETUNE_UPDATE_GOLDEN=1\n"
    )
    return header + yaml.safe_dump_all(children(case), sort_keys=False, width=120)


def test_the_three_representative_specs_are_present() -> None:
    assert CASES == ["base-two-lora-adapters", "merged-from-finetunejob", "tp4-quantized"]


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    rendered = render(case)
    assert_golden(GOLDEN / f"{case}.yaml", rendered)
    # The files are plain manifests (no YAML anchors): they load back into what the builder produced.
    assert "&id" not in rendered
    assert list(yaml.safe_load_all(rendered)) == children(case)
