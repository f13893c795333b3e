"""The status a pass writes, as a merge patch must see it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def with_removals(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired`, plus None (delete, in a merge patch) for each key of `current` it no longer has, at
    every level of nested objects. The operator owns the whole status: a field it stops setting (a
    canary's `stepServedAt`, reset by the next step) must not linger from an earlier pass, which
    `to_wire()` (no nulls) and a merge patch (absent keys are left alone) would otherwise do."""
    out = dict(desired)
    for key, old in current.items():
        if key not in desired:
            out[key] = None
        elif isinstance(old, Mapping) and isinstance(desired[key], Mapping):
            out[key] = with_removals(old, desired[key])
    return out
