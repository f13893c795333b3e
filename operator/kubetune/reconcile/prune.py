"""Deleting the children a ModelDeployment owns that its last pass did not render.

Observe (list every prunable kind the cluster serves, by the object's label) → plan
(`kubetune.planning.modeldeployment.prune_deletes`) → apply (the generic applier, uid-guarded deletes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune.builders.common import LABEL_DEPLOYMENT
from kubetune.kube.client import KubeClient
from kubetune.planning.modeldeployment import PRUNABLE, Capabilities, prune_deletes
from kubetune.planning.plan import Plan
from kubetune.reconcile.apply import execute


async def prune(
    client: KubeClient,
    mdep: Mapping[str, Any],
    keep: frozenset[tuple[str, str]],
    held_variants: set[str],
    caps: Capabilities,
) -> None:
    """Delete children this object owns that the pass did not render (see `prune_deletes`)."""
    meta = mdep["metadata"]
    owned: list[dict[str, Any]] = []
    for api_version, kind, capability in PRUNABLE:
        if capability is not None and not getattr(caps, capability):
            continue
        items = await client.list(
            api_version, kind, meta["namespace"], label_selector=f"{LABEL_DEPLOYMENT}={meta['name']}"
        )
        owned.extend({**item, "apiVersion": api_version, "kind": kind} for item in items)
    deletes = prune_deletes(str(meta["uid"]), owned, keep, held_variants)
    await execute(client, meta["namespace"], Plan(status={}, delete=deletes))
