"""The status merge patch: changed leaves sent, removed fields deleted at every level."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.kube.status import merge_patch, write_status


@pytest.mark.parametrize(
    ("current", "desired", "patch"),
    [
        # A top-level field no longer set (the canary removed from the spec).
        ({"phase": "Ready", "canary": {"step": 1}}, {"phase": "Ready"}, {"canary": None}),
        # A nested one: the next step resets stepServedAt; it must not survive the merge patch.
        (
            {"canary": {"step": 1, "weight": 50, "stepServedAt": "2026-01-01T00:00:00Z"}},
            {"canary": {"step": 2, "weight": 100}},
            {"canary": {"step": 2, "weight": 100, "stepServedAt": None}},
        ),
        # Two levels down.
        ({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": 1}}}, {"a": {"b": {"d": None}}}),
        # Lists are replaced whole by a merge patch: nothing to delete inside them.
        ({"variants": [{"name": "a", "x": 1}]}, {"variants": [{"name": "a"}]}, {"variants": [{"name": "a"}]}),
        # Nothing removed, nothing changed: no write at all.
        ({"phase": "Ready", "canary": {"step": 1}}, {"phase": "Ready", "canary": {"step": 1}}, None),
        # A mapping replaced by a scalar is replaced, not recursed into.
        ({"a": {"b": 1}}, {"a": 3}, {"a": 3}),
    ],
)
def test_removed_fields_are_deleted_by_the_patch(
    current: dict[str, Any], desired: dict[str, Any], patch: dict[str, Any] | None
) -> None:
    assert merge_patch(current, desired) == patch


class _RecordingClient:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_merge(self, *args: Any, subresource: str | None = None) -> None:
        assert subresource == "status"
        self.patches.append(args[-1])


async def test_a_status_write_deletes_what_the_pass_cleared() -> None:
    # A suspended schedule has no next run and an evaluation removed from its spec unpins the frozen
    # set: both cleared fields must go, not linger from the last pass.
    obj = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneSchedule",
        "metadata": {"namespace": "ns", "name": "weekly"},
        "status": {
            "nextScheduleTime": "2026-01-05T03:00:00Z",
            "frozenSet": {"uri": "pvc://m/f.jsonl"},
            "runs": [],
        },
    }
    client = _RecordingClient()
    assert await write_status(client, obj, {"runs": []})  # type: ignore[arg-type]
    assert client.patches == [{"status": {"nextScheduleTime": None, "frozenSet": None}}]
    assert not await write_status(client, {**obj, "status": {"runs": []}}, {"runs": []})  # type: ignore[arg-type]
