"""Compare-then-patch of a custom object's status subresource."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune.kube.client import KubeClient


def merge_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """RFC 7386 merge patch turning `current` into `desired`, recursing into objects.

    Only changed leaves are sent. A key of `current` that `desired` no longer has is deleted (null), at
    every depth: the operator owns the whole status, and a field a pass stops setting (a canary's
    `stepServedAt` reset by the next step, a suspended schedule's `nextScheduleTime`) must not linger.
    Lists are replaced whole. None when nothing changed.
    """
    current = current or {}
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        old = current.get(key)
        if old == value or (value is None and key not in current):
            continue
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = merge_patch(old, value)
            if nested is not None:
                patch[key] = nested
        else:
            patch[key] = value
    return patch or None


async def write_status(client: KubeClient, obj: Mapping[str, Any], desired: dict[str, Any]) -> bool:
    """Patch status only when it differs (`merge_patch`); True if a write happened."""
    patch = merge_patch(obj.get("status"), desired)
    if patch is None:
        return False
    meta = obj["metadata"]
    await client.patch_merge(
        obj["apiVersion"],
        obj["kind"],
        meta["namespace"],
        meta["name"],
        {"status": patch},
        subresource="status",
    )
    return True
