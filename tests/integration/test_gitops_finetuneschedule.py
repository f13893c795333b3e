"""FineTuneSchedule states as GitOps tools see them: recorded from the real API server, judged by kstatus,
Argo CD's Lua and Flux's CEL (tests/support/gitops.py). `KUBETUNE_RECORD_GITOPS_STATES=1` rewrites
tests/gitops/states/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_finetuneschedule import (  # noqa: F401 (clock, operator: fixtures)
    clock,
    fts_manifest,
    get,
    operator,
)
from tests.support.cluster import Kube
from tests.support.gitops import assert_verdicts, condition, record
from tests.support.polling import aeventually

from kubetune.kube.client import KubeClient

pytestmark = pytest.mark.cluster


async def _settled(client: KubeClient, namespace: str, name: str, reason: str) -> dict[str, Any]:
    """The schedule once Ready or Stalled carries `reason` for the current generation."""

    async def check() -> dict[str, Any]:
        obj = await get(client, namespace, name)
        status = obj.get("status") or {}
        assert status.get("observedGeneration") == obj["metadata"]["generation"], status
        reasons = {c["reason"] for c in status.get("conditions", []) if c["type"] in ("Ready", "Stalled")}
        assert reason in reasons, status.get("conditions")
        return obj

    result: dict[str, Any] = await aeventually(check, timeout=30, message=f"{name}: {reason}")
    return result


@pytest.mark.usefixtures("operator")
async def test_scheduled_suspended_and_invalid(
    kube: Kube, namespace: str, client: KubeClient, tmp_path: Path
) -> None:
    manifest = fts_manifest("nightly")
    kube.apply(manifest, namespace)
    scheduled = await _settled(client, namespace, "nightly", "Scheduled")

    suspended_manifest = fts_manifest("nightly", suspend=True)
    kube.apply(suspended_manifest, namespace)
    suspended = await _settled(client, namespace, "nightly", "Suspended")

    # A month name the schema's pattern lets through and the cron parser refuses.
    kube.apply(fts_manifest("broken", schedule="0 0 * Foo *"), namespace)
    invalid = await _settled(client, namespace, "broken", "InvalidSchedule")

    assert condition(scheduled, "Ready")["status"] == "True"  # type: ignore[index]
    assert condition(suspended, "Ready")["reason"] == "Suspended"  # type: ignore[index]
    assert "spec.schedule" in condition(invalid, "Stalled")["message"]  # type: ignore[index]
    table = kube.kubectl("get", "finetuneschedule", "broken", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert "REASON" in header.split(), header
    assert "InvalidSchedule" in row.split(), row
    assert_verdicts(
        [
            record("finetuneschedule-scheduled", scheduled, tmp_path),
            record("finetuneschedule-suspended", suspended, tmp_path),
            record("finetuneschedule-invalid-schedule", invalid, tmp_path),
        ]
    )
