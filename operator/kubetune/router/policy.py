"""Routing policies: pure functions of an immutable snapshot and a request key.

Sticky assignment uses weighted rendezvous hashing (highest random weight): each (user, variant) pair gets a
pseudo-random score scaled by the variant's weight and the user goes to the highest score. When one weight
changes, only users whose winning score crosses over move, which is the minimum any split can achieve; a
variant that leaves the split gives its users to their second choice and takes them back when it returns.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from kubetune.api.routerconfig import RouterConfig

_MASK64 = (1 << 64) - 1
_TWO_POW_53 = float(1 << 53)


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-distributed bijection on 64-bit integers."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class VariantTarget:
    """A variant as the policy sees it."""

    name: str
    weight: int
    endpoints: tuple[str, ...]
    served_model: str | None
    ready: bool
    seed: int = field(compare=False)

    @property
    def routable(self) -> bool:
        return self.ready and bool(self.endpoints)


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """One immutable view of the split; replaced whole on reload or health change."""

    variants: tuple[VariantTarget, ...]
    by_name: Mapping[str, VariantTarget]
    skipped: tuple[VariantTarget, ...] = ()
    """Variants with a weight but no ready endpoint: their share goes to the others."""

    @classmethod
    def from_config(cls, config: RouterConfig, down: frozenset[str] = frozenset()) -> RoutingSnapshot:
        """Build a snapshot; `down` names variants with no live endpoint right now."""
        targets = tuple(
            VariantTarget(
                name=v.name,
                weight=v.weight,
                endpoints=v.endpoints,
                served_model=v.served_model,
                ready=v.ready and v.name not in down,
                seed=_key_hash("variant:" + v.name),
            )
            for v in config.variants
        )
        return cls(
            variants=targets,
            by_name={t.name: t for t in targets},
            skipped=tuple(t for t in targets if t.weight > 0 and not t.routable),
        )

    def candidates(self) -> tuple[VariantTarget, ...]:
        """Variants that can take split traffic: routable and with a positive weight."""
        return tuple(t for t in self.variants if t.weight > 0 and t.routable)


class Via(StrEnum):
    OVERRIDE = "override"
    STICKY = "sticky"
    WEIGHTED = "weighted"


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a policy may look at: the sticky key and the override, already extracted from headers."""

    sticky_key: str | None = None
    override: str | None = None


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Variants to try in order (the first, then fallbacks before any byte was sent), and why."""

    order: tuple[VariantTarget, ...]
    via: Via


class RoutingError(Exception):
    """No variant can serve the request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RoutingPolicy(Protocol):
    """The router calls this once per request with the current snapshot."""

    async def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision: ...


def rendezvous_order(candidates: tuple[VariantTarget, ...], key: str) -> tuple[VariantTarget, ...]:
    """Candidates ranked by weighted rendezvous score for `key`, best first."""
    base = _key_hash(key)
    scored: list[tuple[float, str, VariantTarget]] = []
    for target in candidates:
        # Uniform u in (0, 1]; -w / ln(u) makes P(win) proportional to w among independent draws.
        u = ((_mix64(base ^ target.seed) >> 11) + 1) / _TWO_POW_53
        score = math.inf if u >= 1.0 else -target.weight / math.log(u)
        scored.append((score, target.name, target))
    scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return tuple(item[2] for item in scored)


def weighted_order(candidates: tuple[VariantTarget, ...], draw: float) -> tuple[VariantTarget, ...]:
    """Candidates with the one picked by `draw` in [0, 1) over cumulative weights first."""
    total = sum(t.weight for t in candidates)
    point = draw * total
    cumulative = 0.0
    for index, target in enumerate(candidates):
        cumulative += target.weight
        if point < cumulative:
            return (target, *candidates[:index], *candidates[index + 1 :])
    return candidates


@dataclass
class WeightedStickyPolicy:
    """Override header, then sticky rendezvous hashing, then a weighted random draw."""

    rng: random.Random = field(default_factory=random.Random)

    async def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        return self.decide(snapshot, request)

    def decide(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """The synchronous core, for tests and benchmarks that call it in a tight loop."""
        if request.override is not None:
            target = snapshot.by_name.get(request.override)
            if target is None:
                raise RoutingError(400, f"unknown variant {request.override!r}")
            if not target.routable:
                raise RoutingError(503, f"variant {request.override!r} has no ready endpoint")
            # An explicit choice must not silently be served by another variant.
            return RouteDecision(order=(target,), via=Via.OVERRIDE)
        candidates = snapshot.candidates()
        if not candidates:
            raise RoutingError(503, "no variant with a ready endpoint and a positive weight")
        if request.sticky_key is not None:
            return RouteDecision(order=rendezvous_order(candidates, request.sticky_key), via=Via.STICKY)
        return RouteDecision(order=weighted_order(candidates, self.rng.random()), via=Via.WEIGHTED)
