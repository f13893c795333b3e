"""What GitOps tools conclude from kubetune objects: the Go helper tests/gitops/verdicts run as they would.

kstatus (cli-utils `status.Compute`), the chart's Argo CD health script under gopher-lua and the chart's
Flux healthCheckExprs under cel-go. The helper is built by `make gitops-verdicts` (cached by source hash);
`verdicts()` builds it when missing, which is a no-op when it is there.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "tests" / "gitops" / "verdicts" / "build.sh"
ARGOCD_SCRIPT = ROOT / "charts" / "kubetune" / "files" / "gitops" / "argocd-health.lua"
FLUX_EXPRS = ROOT / "charts" / "kubetune" / "files" / "gitops" / "flux-healthcheckexprs.yaml"
STATES = ROOT / "tests" / "gitops" / "states"
RECORD = "KUBETUNE_RECORD_GITOPS_STATES"
"""Set to 1 to rewrite tests/gitops/states/ from the real-apiserver test (then review the diff)."""


@dataclass(frozen=True)
class Verdicts:
    kstatus: str
    argocd: str
    flux: str
    messages: Mapping[str, str]


def helper() -> Path:
    built = subprocess.run([str(BUILD)], check=False, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, f"{BUILD} failed:\n{built.stderr[-4000:]}"
    return Path(built.stdout.strip())


def verdicts(paths: Sequence[Path]) -> dict[str, Verdicts]:
    """By file name (without .json): each tool's verdict on the object in that file."""
    proc = subprocess.run(
        [str(helper()), "-argocd", str(ARGOCD_SCRIPT), "-flux", str(FLUX_EXPRS), *map(str, paths)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    result = {}
    for line in proc.stdout.splitlines():
        item = json.loads(line)
        result[Path(item["file"]).stem] = Verdicts(
            kstatus=item["kstatus"]["status"],
            argocd=item["argocd"]["status"],
            flux=item["flux"]["status"],
            messages={tool: item[tool].get("message", "") for tool in ("kstatus", "argocd", "flux")},
        )
    return result


def scrub(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as recorded: what the tools read, without the server's bookkeeping noise."""
    meta = obj["metadata"]
    kept = {k: meta[k] for k in ("name", "generation", "labels", "annotations") if k in meta}
    result = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": kept, "spec": obj["spec"]}
    if "status" in obj:
        result["status"] = obj["status"]
    return result


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return None


def summary(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(Ready, Reconciling, Stalled) statuses, "-" where absent."""
    return tuple(  # type: ignore[return-value]
        (c or {}).get("status", "-") for c in (condition(obj, t) for t in ("Ready", "Reconciling", "Stalled"))
    )


@dataclass(frozen=True)
class Expected:
    """(Ready, Reconciling, Stalled) and each tool's verdict for a recorded state."""

    conditions: tuple[str, str, str]
    kstatus: str
    argocd: str
    flux: str


WORKING = Expected(("False", "True", "False"), "InProgress", "Progressing", "InProgress")
HELD = Expected(("False", "True", "False"), "InProgress", "Suspended", "InProgress")
SUSPENDED = Expected(("False", "False", "False"), "InProgress", "Suspended", "InProgress")
DONE = Expected(("True", "False", "False"), "Current", "Healthy", "Current")
BLOCKED = Expected(("False", "False", "True"), "Failed", "Degraded", "Failed")

EXPECTED: dict[str, Expected] = {
    "finetunejob-training": WORKING,
    "finetunejob-suspended": SUSPENDED,
    "finetunejob-succeeded": DONE,
    "finetunejob-backoff-exhausted": BLOCKED,
    "finetunejob-invalid-spec": BLOCKED,
    "modeldeployment-waiting-for-model": WORKING,
    "modeldeployment-gate-failed": BLOCKED,
    "modeldeployment-smoke-failed": BLOCKED,
    "modeldeployment-canary-paused": HELD,
    "modeldeployment-canary-at-10": WORKING,
    "modeldeployment-promoted": DONE,
    "modeldeployment-adapter-canary": WORKING,
    "modeldeployment-canary-aborted": BLOCKED,
    "finetuneschedule-scheduled": DONE,
    "finetuneschedule-suspended": SUSPENDED,
    "finetuneschedule-invalid-schedule": BLOCKED,
}
"""Every state the real-apiserver tests record, and what each tool must conclude from it."""


def record(state: str, obj: Mapping[str, Any], into: Path) -> Path:
    """Write the object under `into` (and into tests/gitops/states/ when recording) as `<state>.json`."""
    text = json.dumps(scrub(obj), indent=2, sort_keys=True) + "\n"
    path = into / f"{state}.json"
    path.write_text(text)
    if os.environ.get(RECORD) == "1":
        STATES.mkdir(parents=True, exist_ok=True)
        (STATES / f"{state}.json").write_text(text)
    return path


def assert_verdicts(paths: Sequence[Path]) -> None:
    """Each recorded object carries the expected summary and gets the expected verdict from each tool."""
    got = verdicts(paths)
    for path in paths:
        obj = json.loads(path.read_text())
        want = EXPECTED[path.stem]
        assert summary(obj) == want.conditions, (path.stem, obj["status"].get("conditions"))
        seen = got[path.stem]
        assert (seen.kstatus, seen.argocd, seen.flux) == (want.kstatus, want.argocd, want.flux), (
            path.stem,
            seen,
        )
