"""Compare-then-patch of a custom object's status subresource."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune.kube.client import KubeClient
from kubetune.status.wire import with_removals


def merge_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """RFC 7386 merge patch turning `current` into `desired`, recursing into objects.

    Only changed leaves are sent, so a field written by another client in between is not
    overwritten with a stale copy. Keys absent from `desired` are
    left alone; a key whose desired value is None is removed. None when nothing changed.
    """
    current = current or {}
    patch: dict[str, Any] = {}
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
    """Patch status only when it differs; True if a write happened. The operator owns the whole
    status: a field the pass no longer sets, at any depth, is deleted (`with_removals`), so that a
    cleared `nextScheduleTime` or pinned `frozenSet` does not survive the merge patch."""
    current = obj.get("status") or {}
    patch = merge_patch(current, with_removals(current, desired))
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
