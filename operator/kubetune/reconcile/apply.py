"""The one generic applier: executes a Plan against the API, in the Plan's order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from kubetune.kube.client import ApiError, KubeClient
from kubetune.planning.plan import Plan

Manifest = dict[str, Any]


async def apply_in_order(client: KubeClient, manifests: Sequence[Manifest]) -> list[Manifest]:
    """Server-side apply one after another (a later child may need an earlier one); what was stored."""
    return [await client.apply(manifest) for manifest in manifests]


async def create_if_absent(client: KubeClient, manifest: Manifest) -> Manifest | None:
    """Create `manifest` unless its name exists; what is stored either way (an existing object is not
    rewritten). None only if it was deleted again between our create and our read."""
    try:
        return await client.create(manifest)
    except ApiError as exc:
        if exc.status != 409:
            raise
    meta = manifest["metadata"]
    return await client.get(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])


async def execute(client: KubeClient, namespace: str, plan: Plan) -> None:
    await asyncio.gather(
        *(client.apply(manifest) for manifest in plan.apply),
        *(client.ensure(manifest) for manifest in plan.create),
    )
    for delete in plan.delete:
        await client.delete(
            delete.api_version,
            delete.kind,
            namespace,
            delete.name,
            uid=delete.uid,
            propagation=delete.propagation,
        )
    for patch in plan.patch:
        await client.patch_merge(patch.api_version, patch.kind, namespace, patch.name, patch.patch)
    for manifest in plan.replace:
        await client.apply(manifest)
