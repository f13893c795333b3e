"""The router's mutable state: the loaded config, passive endpoint health, and the snapshot built from both.

Requests read one snapshot at their start and keep it, so a reload never changes a request midway.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import aiohttp

from kubetune.api.routerconfig import RouterConfig
from kubetune.router.metrics import RouterMetrics
from kubetune.router.policy import RoutingSnapshot, VariantTarget


class EndpointHealth:
    """Endpoints that refused a connection are skipped for a cooldown, then tried again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_until: dict[str, float] = {}
        self._cursor: dict[str, itertools.count[int]] = {}

    def mark_down(self, endpoint: str, cooldown_s: float) -> None:
        self._down_until[endpoint] = self._clock() + cooldown_s

    def mark_up(self, endpoint: str) -> None:
        self._down_until.pop(endpoint, None)

    def is_up(self, endpoint: str, now: float) -> bool:
        until = self._down_until.get(endpoint)
        return until is None or until <= now

    def next_recovery(self) -> float | None:
        return min(self._down_until.values(), default=None)

    def forget_expired(self, now: float) -> None:
        for endpoint in [e for e, until in self._down_until.items() if until <= now]:
            del self._down_until[endpoint]

    def ordered(self, target: VariantTarget) -> Iterator[str]:
        """The variant's endpoints, live ones first, rotating the start for round robin."""
        endpoints = target.endpoints
        if len(endpoints) == 1:
            yield endpoints[0]
            return
        cursor = self._cursor.setdefault(target.name, itertools.count())
        start = next(cursor) % len(endpoints)
        rotated = endpoints[start:] + endpoints[:start]
        now = self._clock()
        live = [e for e in rotated if self.is_up(e, now)]
        yield from live
        yield from (e for e in rotated if e not in live)


class RouterState:
    def __init__(
        self, config: RouterConfig, metrics: RouterMetrics, clock: Callable[[], float] = time.monotonic
    ):
        self.metrics = metrics
        self.health = EndpointHealth(clock)
        self._clock = clock
        self.config = config
        self._snapshot = RoutingSnapshot.from_config(config)
        self._recheck_at: float | None = None
        self.install(config)

    def install(self, config: RouterConfig) -> None:
        """Swap in a new config; in-flight requests keep the snapshot they started with."""
        old_names = {v.name for v in self.config.variants}
        self.config = config
        t = config.timeouts
        self.client_timeout = aiohttp.ClientTimeout(
            total=t.total_s, sock_connect=t.connect_s, sock_read=t.read_s
        )
        for gone in old_names - {v.name for v in config.variants}:
            self.metrics.remove(self.metrics.weight, gone)
            self.metrics.remove(self.metrics.ready, gone)
        self._rebuild()

    def snapshot(self) -> RoutingSnapshot:
        if self._recheck_at is not None and self._clock() >= self._recheck_at:
            self._rebuild()
        return self._snapshot

    def endpoint_failed(self, target: VariantTarget, endpoint: str) -> None:
        self.health.mark_down(endpoint, self.config.endpoint_cooldown_s)
        self._rebuild()

    def endpoint_ok(self, endpoint: str) -> None:
        if not self.health.is_up(endpoint, self._clock()):
            self.health.mark_up(endpoint)
            self._rebuild()

    def _rebuild(self) -> None:
        now = self._clock()
        self.health.forget_expired(now)
        down = frozenset(
            v.name
            for v in self.config.variants
            if v.endpoints and not any(self.health.is_up(e, now) for e in v.endpoints)
        )
        self._snapshot = RoutingSnapshot.from_config(self.config, down)
        self._recheck_at = self.health.next_recovery()
        for target in self._snapshot.variants:
            self.metrics.labels(self.metrics.weight, target.name).set(target.weight)
            self.metrics.labels(self.metrics.ready, target.name).set(1 if target.routable else 0)
