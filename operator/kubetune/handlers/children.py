"""Children's state changes re-run their parent's reconcile at once (not only at the next resync).

A Job finishing, a Deployment becoming available: the parent must move without waiting up to
KUBETUNE_RESYNC_SECONDS. Only a change of the child's `status` (or its deletion) counts, so
the Jobs and Deployments the operator itself just created do not trigger a second pass.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubetune.api.common import API_VERSION
from kubetune.builders.common import MANAGED_BY
from kubetune.handlers import resync

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
_last_status: dict[str, Any] = {}


def _parent(body: kopf.Body) -> tuple[str, str] | None:
    for ref in body["metadata"].get("ownerReferences", []):
        if ref.get("controller") and ref.get("apiVersion") == API_VERSION:
            return str(ref["kind"]), str(ref["name"])
    return None


async def _child_changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo) -> None:
    parent = _parent(body)
    if parent is None:
        return
    uid = body["metadata"]["uid"]
    if event.get("type") == "DELETED":
        _last_status.pop(uid, None)
    else:
        status = dict(body.get("status") or {})
        previous = _last_status.get(uid)
        _last_status[uid] = status
        if status == previous or (previous is None and not status):
            return
    kind, name = parent
    await resync.trigger(kind, body["metadata"]["namespace"], name, memo)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _child_changed(event, body, memo)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _child_changed(event, body, memo)
