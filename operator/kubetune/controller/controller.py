"""The Controller: everything between kopf's watch streams and the per-kind reconcilers.

It owns what a pass needs around it, per object: the watch cache (latest body of each watched object),
a lock serialising passes, one pending requeue, which generation was last handled, the phase gauge;
and at one edge it writes the status a reconciler computed (only if it changed), posts its Events and
translates errors: API conflicts and 5xx → retry soon; invalid specs → no retry (the reconciler
already recorded a condition).

Passes are driven by watch events (`on_event`: a generation this process has not handled yet),
children's status changes (`on_child_event`), requested requeues and the periodic resync from the
watch cache (controller-runtime's SyncPeriod). kopf's create/update/resume handlers and timers are
not used: they keep bookkeeping in annotations and finalizers on users' objects (a FineTuneJob
could not be deleted while the operator is down). The operator writes `status` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import prometheus_client

from kubetune.api.common import API_VERSION
from kubetune.controller.events import post_event
from kubetune.kube.client import ApiError, KubeClient
from kubetune.kube.config import Credentials, load_credentials
from kubetune.kube.status import write_status
from kubetune.metrics import OBJECT_PHASE, OBJECTS, RECONCILE_SECONDS, RECONCILES
from kubetune.planning.plan import Outcome
from kubetune.settings import OperatorSettings

log = logging.getLogger("kubetune")

Key = tuple[str, str, str]
"""(kind, namespace, name)"""
MIN_REQUEUE_S = 0.5
UNEXPECTED_ERROR_RETRY_S = 30.0
RETRYABLE_ERROR_RETRY_S = 2.0
API_ERROR_RETRY_S = 30.0
RESYNC_CONCURRENCY = 16
TRIGGER_CONCURRENCY = 64


class Reconciler(Protocol):
    """One kind's reconcile pass, and the per-object state it keeps between passes."""

    kind: str

    async def reconcile(
        self, client: KubeClient, obj: dict[str, Any], now: datetime, *, resync: bool
    ) -> Outcome: ...

    def forget(self, uid: str) -> None:
        """Drop everything held for a deleted object (caches, background tasks)."""


class RetryLater(Exception):
    """A pass failed in a way that a later pass may not: requeue after `delay_s`."""

    def __init__(self, message: str, delay_s: float) -> None:
        super().__init__(message)
        self.delay_s = delay_s


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Controller:
    def __init__(
        self,
        settings: OperatorSettings,
        reconcilers: Sequence[Reconciler],
        client: KubeClient | None = None,
    ) -> None:
        self.settings = settings
        self.reconcilers = {r.kind: r for r in reconcilers}
        self._client = client
        self._cache: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r.kind: {} for r in reconcilers}
        self._locks: defaultdict[Key, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._phases: dict[Key, str] = {}
        self._written: set[Key] = set()  # objects this controller has reconciled (and maybe written)
        self._handled: dict[Key, tuple[str, int | None]] = {}  # (uid, generation) last reconciled
        self._requeues: dict[Key, asyncio.TimerHandle] = {}
        self._child_status: dict[str, dict[str, Any]] = {}  # by child uid: its last seen status
        self._followed: dict[str, object] = {}  # by followed object's uid: what its followers read of it
        self._background: set[asyncio.Task[None]] = set()
        self._trigger_gate = asyncio.Semaphore(TRIGGER_CONCURRENCY)
        self._resync: asyncio.Task[None] | None = None
        self._credentials: Credentials | None = None
        self._credentials_lock = asyncio.Lock()

    @property
    def client(self) -> KubeClient:
        assert self._client is not None, "Controller.start() creates the client"
        return self._client

    # Lifecycle.

    async def credentials(self) -> Credentials:
        """Loaded once and shared by our client and kopf's login (which may run before start())."""
        async with self._credentials_lock:
            if self._credentials is None:
                kube = self.settings.kube
                self._credentials = await load_credentials(
                    kube.kubeconfig,
                    service_host=kube.service_host,
                    service_port=kube.service_port,
                    default_kubeconfig=kube.default_kubeconfig,
                )
            return self._credentials

    async def start(self, *, resync: bool = True) -> None:
        if self._client is None:
            self._client = KubeClient(await self.credentials())
        if self.settings.metrics_port:
            prometheus_client.start_http_server(self.settings.metrics_port)
        if resync:
            self._resync = asyncio.create_task(self.resync_loop(), name="kubetune-resync")

    async def stop(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync
        for timer in self._requeues.values():
            timer.cancel()
        self._requeues.clear()
        if self._client is not None:
            await self._client.close()

    # Watch events.

    async def on_event(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of a kind we reconcile: reconcile a spec this process has not handled yet.

        kopf does not retry event handlers, so a failed pass is retried here, through a requeue.
        """
        self.remember(kind, event_type, body)
        meta = body["metadata"]
        if event_type == "DELETED":
            # The watch's DELETED event, not an on.delete handler: those need a finalizer to be sure to run.
            self.forget(kind, meta["namespace"], meta["name"], meta["uid"])
            return
        if not self.spec_unhandled(kind, body):
            return
        key = (kind, meta["namespace"], meta["name"])
        try:
            await self.run(kind, body, resync=False)
        except RetryLater as exc:
            log.info("%s %s/%s: %s; retrying", kind, meta["namespace"], meta["name"], exc)
            self._schedule_requeue(key, exc.delay_s)
        except Exception:
            log.exception("%s %s/%s: reconcile failed; retrying", kind, meta["namespace"], meta["name"])
            self._schedule_requeue(key, UNEXPECTED_ERROR_RETRY_S)

    async def on_child_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A child's state changed: re-run its parent's pass at once (not only at the next resync).

        A Job finishing, a Deployment becoming available: the parent must move without waiting up to
        a resync period. Only a change of the child's `status` (or its deletion) counts, so the
        Jobs and Deployments the operator itself just created do not trigger a second pass.
        """
        parent = _parent(body)
        if parent is None:
            return
        uid = body["metadata"]["uid"]
        if event_type == "DELETED":
            self._child_status.pop(uid, None)
        else:
            status = dict(body.get("status") or {})
            previous = self._child_status.get(uid)
            self._child_status[uid] = status
            if status == previous or (previous is None and not status):
                return
        kind, name = parent
        await self.trigger(kind, body["metadata"]["namespace"], name)

    async def on_followed_event(
        self,
        event_type: str | None,
        body: Mapping[str, Any],
        summary: object,
        follower_kind: str,
        follows: Callable[[Mapping[str, Any], str], bool],
    ) -> None:
        """An object others follow (a FineTuneSchedule a ModelDeployment serves) changed what they read
        of it (`summary`), or was deleted: reconcile its followers in the namespace now, from the cache.

        The watch's initial listing (event type None) runs nothing: every follower gets its own initial
        pass then. A schedule created later (ADDED) does: its followers stop reporting it missing.
        """
        meta = body["metadata"]
        uid = meta["uid"]
        if event_type == "DELETED":
            self._followed.pop(uid, None)
        else:
            previous = self._followed.get(uid)
            self._followed[uid] = summary
            if previous == summary or (previous is None and event_type is None):
                return
        namespace, name = meta["namespace"], meta["name"]
        followers = [
            key[1]
            for key, obj in list(self._cache.get(follower_kind, {}).items())
            if key[0] == namespace and follows(obj, name)
        ]
        for follower in followers:
            await self.trigger(follower_kind, namespace, follower)

    def remember(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Keep the latest body of each watched object (no API calls) for resyncs and triggers."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self._cache[kind].pop(key, None)
        else:
            self._cache[kind][key] = dict(body)

    def spec_unhandled(self, kind: str, body: Mapping[str, Any]) -> bool:
        """Whether this process has not reconciled this object at its current generation.

        True on first sight (the watch's initial listing after a start: kopf's "resume") and after every
        spec change (a new generation). Status writes, ours and rank 0's, leave the generation alone.
        """
        meta = body["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        return self._handled.get(key) != (meta.get("uid"), meta.get("generation"))

    def forget(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """A deleted object: drop the controller's records of it, then its reconciler's."""
        key = (kind, namespace, name)
        self._handled.pop(key, None)
        phase = self._phases.pop(key, None)
        if phase is not None:
            OBJECTS.labels(kind, phase).dec()
            OBJECT_PHASE.remove(kind, namespace, name, phase)
        self._locks.pop(key, None)
        self._written.discard(key)
        timer = self._requeues.pop(key, None)
        if timer is not None:
            timer.cancel()
        self.reconcilers[kind].forget(uid)

    # Passes.

    async def run(self, kind: str, body: Mapping[str, Any], *, resync: bool) -> None:
        """One serialised, measured, error-translated reconcile pass."""
        meta = body["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        async with self._locks[key]:
            started = time.perf_counter()
            result = "error"
            try:
                result = await self._pass(key, body, resync=resync)
            finally:
                RECONCILES.labels(kind, result).inc()
                RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)

    async def _pass(self, key: Key, body: Mapping[str, Any], *, resync: bool) -> str:
        kind = key[0]
        client = self.client
        obj = dict(body)
        try:
            if key in self._written:
                # The body may predate our own last status write (a cached or queued event):
                # reconciling it would repeat a transition and its Event. Read it fresh.
                fresh = await client.get(obj["apiVersion"], obj["kind"], key[1], key[2])
                if fresh is None:
                    return "gone"
                obj = fresh
            when = now()
            outcome = await self.reconcilers[kind].reconcile(client, obj, when, resync=resync)
            await write_status(client, obj, outcome.status)
        except ApiError as exc:
            if exc.not_found and await self._deleted(obj):
                return "gone"  # the object was deleted while we worked
            delay = RETRYABLE_ERROR_RETRY_S if exc.retryable else API_ERROR_RETRY_S
            raise RetryLater(str(exc), delay) from exc
        self._written.add(key)
        self._handled[key] = (obj["metadata"].get("uid"), obj["metadata"].get("generation"))
        self._schedule_requeue(key, outcome.requeue_after_s)
        for event in outcome.events:
            await post_event(client, obj, event, when, self.settings.instance)
        self._count_phase(key, str(outcome.status.get("phase") or "Unknown"))
        return "ok"

    async def _deleted(self, obj: Mapping[str, Any]) -> bool:
        """After a 404 during a pass: is it the object itself that is gone (not a child or a kind)?"""
        meta = obj["metadata"]
        try:
            current = await self.client.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        except ApiError:
            return False
        return current is None or current["metadata"].get("uid") != meta.get("uid")

    def _count_phase(self, key: Key, phase: str) -> None:
        previous = self._phases.get(key)
        if previous != phase:
            if previous is not None:
                OBJECTS.labels(key[0], previous).dec()
                OBJECT_PHASE.remove(*key, previous)
            OBJECTS.labels(key[0], phase).inc()
            OBJECT_PHASE.labels(*key, phase).set(1)
            self._phases[key] = phase

    # Requeues and resyncs.

    def _schedule_requeue(self, key: Key, delay_s: float | None) -> None:
        """One pending requeue per object: the latest pass's request replaces any earlier one."""
        previous = self._requeues.pop(key, None)
        if previous is not None:
            previous.cancel()
        if delay_s is None:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._requeues.pop(key, None)
            task = loop.create_task(self.trigger(*key))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        self._requeues[key] = loop.call_later(max(MIN_REQUEUE_S, delay_s), fire)

    async def trigger(self, kind: str, namespace: str, name: str) -> None:
        """Reconcile one object now, from its latest cached body (no-op if it is not watched)."""
        body = self._cache.get(kind, {}).get((namespace, name))
        if body is not None:
            await self._resync_one(kind, body, self._trigger_gate)

    async def _resync_one(self, kind: str, body: dict[str, Any], gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                await self.run(kind, body, resync=True)
            except RetryLater as exc:
                log.debug("resync of %s %s: %s", kind, body["metadata"]["name"], exc)
            except Exception:
                log.exception("resync of %s %s failed", kind, body["metadata"]["name"])

    async def resync_loop(self) -> None:
        gate = asyncio.Semaphore(RESYNC_CONCURRENCY)
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            snapshot = [
                (kind, body) for kind, objects in self._cache.items() for body in list(objects.values())
            ]
            await asyncio.gather(*(self._resync_one(kind, body, gate) for kind, body in snapshot))


def _parent(body: Mapping[str, Any]) -> tuple[str, str] | None:
    for ref in body["metadata"].get("ownerReferences", []):
        if ref.get("controller") and ref.get("apiVersion") == API_VERSION:
            return str(ref["kind"]), str(ref["name"])
    return None
