"""What a reconcile pass hands back to the controller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Outcome:
    """Result of one pass: the full new status, the Events to post, and when to look again.

    `requeue_after_s`: a decision falls due then (a canary step, a smoke test finishing) that no watch
    event would announce; without it the object waits for the periodic resync.
    """

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    requeue_after_s: float | None = None


@dataclass(frozen=True)
class Delete:
    """A child to delete; with `uid`, only that incarnation of it (a precondition)."""

    api_version: str
    kind: str
    name: str
    uid: str | None = None
    propagation: str = "Background"


@dataclass(frozen=True)
class Patch:
    """A merge patch of a child's mutable fields."""

    api_version: str
    kind: str
    name: str
    patch: dict[str, Any]


@dataclass
class Plan:
    """One pass's decisions, executed in this order by the applier (`kubetune.reconcile.apply`).

    `apply` (server-side) and `create` (only when absent: children whose spec is immutable) run
    together; then `delete` and `patch`, in order; then `replace`: children that take the place
    of one just deleted.
    """

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    apply: list[dict[str, Any]] = field(default_factory=list)
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[Delete] = field(default_factory=list)
    patch: list[Patch] = field(default_factory=list)
    replace: list[dict[str, Any]] = field(default_factory=list)
    requeue_after_s: float | None = None

    def outcome(self) -> Outcome:
        return Outcome(status=self.status, events=list(self.events), requeue_after_s=self.requeue_after_s)
