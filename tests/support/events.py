"""A resource's Events, read with kubectl.

The operator posts a pass's Events after that pass's status write, so a test that has seen the
status must still wait for the Events: `events_once` reads them until the check holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.support.cluster import Kube
from tests.support.polling import eventually

Events = list[dict[str, Any]]


def events(kube: Kube, namespace: str, name: str) -> Events:
    out = kube.kubectl(
        "get", "events", "-n", namespace, "-o", "json", "--field-selector", f"involvedObject.name={name}"
    ).stdout
    return list(json.loads(out)["items"])


def events_once(
    kube: Kube, namespace: str, name: str, check: Callable[[Events], bool], *, timeout: float = 30.0
) -> Events:
    """The Events of `name` once `check` holds for them (it may also assert, to say what is missing)."""

    def checked() -> tuple[Events]:
        found = events(kube, namespace, name)
        assert check(found), [(e["type"], e["reason"], e["message"]) for e in found]
        return (found,)  # truthy even when no Event is the expected answer

    (found,) = eventually(checked, timeout=timeout, message=f"Events of {name}")
    return found


def reasons(found: Events) -> set[str]:
    return {e["reason"] for e in found}


def warned(reason: str, text: str) -> Callable[[Events], bool]:
    """A check for `events_once`: a Warning with `reason` whose message contains `text`."""
    return lambda found: any(
        (e["type"], e["reason"]) == ("Warning", reason) and text in e["message"] for e in found
    )
