"""The recorded states under tests/gitops/states/ (written by tests/integration/test_gitops_*.py with
KUBETUNE_RECORD_GITOPS_STATES=1), judged by the real kstatus, Argo CD's Lua VM and Flux's CEL, and the
docs kept in step with the chart's scripts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from tests.support.gitops import (
    ARGOCD_SCRIPT,
    EXPECTED,
    FLUX_EXPRS,
    ROOT,
    STATES,
    assert_verdicts,
    verdicts,
)

RECORDED = sorted(STATES.glob("*.json"))


def test_every_expected_state_is_recorded() -> None:
    assert sorted(p.stem for p in RECORDED) == sorted(EXPECTED)


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_recorded_state_verdicts(path: Path) -> None:
    assert_verdicts([path])


def _variant(tmp_path: Path, name: str, source: str, change: str) -> Path:
    obj = json.loads((STATES / f"{source}.json").read_text())
    obj = copy.deepcopy(obj)
    if change == "new-generation":
        obj["metadata"]["generation"] += 1
    else:
        del obj["status"]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("source", ["finetunejob-succeeded", "modeldeployment-promoted"])
def test_an_unobserved_generation_is_in_progress_for_every_tool(tmp_path: Path, source: str) -> None:
    path = _variant(tmp_path, "edited", source, "new-generation")
    seen = verdicts([path])["edited"]
    assert (seen.kstatus, seen.argocd, seen.flux) == ("InProgress", "Progressing", "InProgress")


@pytest.mark.parametrize("source", ["finetunejob-training", "modeldeployment-canary-at-10"])
def test_before_the_first_status_write(tmp_path: Path, source: str) -> None:
    """kstatus cannot tell a fresh object from a settled one (its documented caveat: no conditions is
    Current); Argo CD's script waits, and Flux's expressions error, which Flux retries until its timeout."""
    path = _variant(tmp_path, "fresh", source, "no-status")
    seen = verdicts([path])["fresh"]
    assert (seen.kstatus, seen.argocd, seen.flux) == ("Current", "Progressing", "Error")


def _indented(text: str, spaces: int) -> str:
    return "\n".join((" " * spaces + line) if line else "" for line in text.rstrip("\n").splitlines())


def test_docs_carry_the_charts_scripts_verbatim() -> None:
    docs = (ROOT / "docs" / "gitops.md").read_text()
    script = _indented(ARGOCD_SCRIPT.read_text(), 4)
    for kind in ("FineTuneJob", "ModelDeployment", "FineTuneSchedule"):
        assert f"  resource.customizations.health.kubetune.io_{kind}: |\n{script}\n" in docs, kind
    exprs = "\n".join(line for line in FLUX_EXPRS.read_text().splitlines() if not line.startswith("#"))
    assert _indented(exprs, 4) in docs


DOC_ROWS = {
    "FineTuneJob training": "finetunejob-training",
    "FineTuneJob suspended": "finetunejob-suspended",
    "FineTuneJob succeeded": "finetunejob-succeeded",
    "FineTuneJob backoff limit exhausted": "finetunejob-backoff-exhausted",
    "FineTuneJob invalid spec (preflight)": "finetunejob-invalid-spec",
    "ModelDeployment waiting for its FineTuneJob (gate pending)": "modeldeployment-waiting-for-model",
    "ModelDeployment gate failed": "modeldeployment-gate-failed",
    "ModelDeployment smoke test failed": "modeldeployment-smoke-failed",
    "ModelDeployment canary paused by `spec`": "modeldeployment-canary-paused",
    "ModelDeployment canary at 10%": "modeldeployment-canary-at-10",
    "ModelDeployment weight-only adapter canary at 50%": "modeldeployment-adapter-canary",
    "ModelDeployment canary aborted": "modeldeployment-canary-aborted",
    "ModelDeployment promoted": "modeldeployment-promoted",
    "FineTuneSchedule scheduled": "finetuneschedule-scheduled",
    "FineTuneSchedule suspended": "finetuneschedule-suspended",
    "FineTuneSchedule invalid schedule": "finetuneschedule-invalid-schedule",
}


def test_docs_verdict_table_matches_the_tested_expectations() -> None:
    rows = {}
    for line in (ROOT / "docs" / "gitops.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in DOC_ROWS:
            rows[DOC_ROWS[cells[0]]] = tuple(cells[1:])
    assert sorted(rows) == sorted(EXPECTED)
    for state, want in EXPECTED.items():
        assert rows[state] == (" / ".join(want.conditions), want.kstatus, want.argocd, want.flux), state
