"""Operator start-up and the one wrapper every handler goes through.

The wrapper serialises passes per object, times them, writes the status the
reconciler computed (only if it changed), posts its Events and translates
errors at this single edge: API conflicts and 5xx → retry soon; invalid specs →
permanent (the reconciler already recorded a condition).

Passes are driven by watch events (`on_event`), child changes, requested requeues
and the periodic resync. kopf's create/update/resume handlers are not used: they
keep their bookkeeping in annotations on the user's object, which costs a PATCH
per change and would need `patch` on the resource itself. Without them the
operator writes nothing but `status`, and its RBAC says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import prometheus_client

from kubetune.api.common import GROUP
from kubetune.builders.common import FIELD_MANAGER, child_name
from kubetune.kube.client import ApiError, KubeClient, load_credentials
from kubetune.metrics import OBJECTS, RECONCILE_SECONDS, RECONCILES
from kubetune.reconcile.common import Event, Outcome, write_status

log = logging.getLogger("kubetune")

Reconciler = Callable[[KubeClient, dict[str, Any], datetime, Any], Awaitable[Outcome]]
RequeueHook = Callable[[str, str, str, kopf.Memo], Coroutine[Any, Any, None]]
"""Runs a pass for (kind, namespace, name) when a requested requeue falls due."""
MIN_REQUEUE_S = 0.5

_locks: defaultdict[tuple[str, str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
_phases: dict[tuple[str, str, str], str] = {}
_written: set[tuple[str, str, str]] = set()  # objects this process has reconciled (and maybe written)
_requeues: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
_handled: dict[tuple[str, str, str], tuple[str, int | None]] = {}  # (uid, generation) last reconciled
UNEXPECTED_ERROR_RETRY_S = 30.0
_requeue_hook: RequeueHook | None = None
_background: set[asyncio.Task[None]] = set()


def set_requeue_hook(hook: RequeueHook) -> None:
    global _requeue_hook
    _requeue_hook = hook


def _schedule_requeue(key: tuple[str, str, str], delay_s: float | None, memo: kopf.Memo) -> None:
    """One pending requeue per object: the latest pass's request replaces any earlier one."""
    previous = _requeues.pop(key, None)
    if previous is not None:
        previous.cancel()
    hook = _requeue_hook
    if delay_s is None or hook is None:
        return
    loop = asyncio.get_running_loop()

    def fire() -> None:
        _requeues.pop(key, None)
        task = loop.create_task(hook(*key, memo))
        _background.add(task)
        task.add_done_callback(_background.discard)

    _requeues[key] = loop.call_later(max(MIN_REQUEUE_S, delay_s), fire)


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings: no log-to-Event spam, long watches, bounded concurrency."""
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.worker_limit = int(os.environ.get("KUBETUNE_WORKER_LIMIT", "200"))
    settings.networking.request_timeout = 60


async def start(memo: kopf.Memo, metrics_port: int | None) -> None:
    memo.client = KubeClient(load_credentials(os.environ.get("KUBETUNE_KUBECONFIG")))
    if metrics_port:
        prometheus_client.start_http_server(metrics_port)


async def stop(memo: kopf.Memo) -> None:
    client: KubeClient | None = getattr(memo, "client", None)
    if client is not None:
        await client.close()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def post_event(client: KubeClient, obj: Mapping[str, Any], event: Event, when: datetime) -> None:
    meta = obj["metadata"]
    stamp = when.isoformat().replace("+00:00", "Z")
    manifest = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": child_name(meta["name"], f"{int(time.time() * 1000):x}", limit=253),
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": f"{GROUP}/operator",
        "reportingInstance": os.environ.get("HOSTNAME", "local"),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await client.create(manifest)
    except ApiError as exc:  # Events are best effort; never fail a reconcile for one
        log.warning(
            "could not post event %s on %s/%s: %s", event.reason, meta["namespace"], meta["name"], exc
        )


async def run(
    kind: str, reconcile: Reconciler, body: Mapping[str, Any], memo: kopf.Memo, context: Any
) -> None:
    """One serialised, measured, error-translated reconcile pass."""
    client: KubeClient = memo.client
    meta = body["metadata"]
    key = (kind, meta["namespace"], meta["name"])
    async with _locks[key]:
        started = time.perf_counter()
        result = "ok"
        try:
            obj = dict(body)
            if key in _written:
                # The body may predate our own last status write (a cached or queued event):
                # reconciling it would repeat a transition and its Event. Read it fresh.
                fresh = await client.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
                if fresh is None:
                    result = "gone"
                    return
                obj = fresh
            when = now()
            outcome = await reconcile(client, obj, when, context)
            await write_status(client, obj, outcome.status)
            _written.add(key)
            _handled[key] = (obj["metadata"].get("uid"), obj["metadata"].get("generation"))
            _schedule_requeue(key, outcome.requeue_after_s, memo)
            for event in outcome.events:
                await post_event(client, obj, event, when)
            phase = str(outcome.status.get("phase") or "Unknown")
            previous = _phases.get(key)
            if previous != phase:
                if previous is not None:
                    OBJECTS.labels(kind, previous).dec()
                OBJECTS.labels(kind, phase).inc()
                _phases[key] = phase
        except ApiError as exc:
            if exc.not_found and exc.message and meta["name"] in exc.message:
                result = "gone"
                return  # the object was deleted while we worked
            result = "error"
            if exc.retryable:
                raise kopf.TemporaryError(str(exc), delay=2) from exc
            raise kopf.TemporaryError(str(exc), delay=30) from exc
        except kopf.TemporaryError:
            raise
        except Exception:
            result = "error"
            raise
        finally:
            RECONCILES.labels(kind, result).inc()
            RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)


def spec_unhandled(kind: str, body: Mapping[str, Any]) -> bool:
    """Whether this process has not reconciled this object at its current generation.

    True on first sight (the watch's initial listing after a start: kopf's "resume") and after every
    spec change (a new generation). Status writes, ours and rank 0's, leave the generation alone.
    """
    meta = body["metadata"]
    key = (kind, meta["namespace"], meta["name"])
    return _handled.get(key) != (meta.get("uid"), meta.get("generation"))


async def on_event(kind: str, reconcile: Reconciler, body: Mapping[str, Any], memo: kopf.Memo) -> None:
    """A watch event: reconcile a spec this process has not handled yet.

    kopf does not retry event handlers, so a failed pass is retried here, through a requeue.
    """
    if not spec_unhandled(kind, body):
        return
    meta = body["metadata"]
    key = (kind, meta["namespace"], meta["name"])
    try:
        await run(kind, reconcile, body, memo, None)
    except kopf.TemporaryError as exc:
        log.info("%s %s/%s: %s; retrying", kind, meta["namespace"], meta["name"], exc)
        _schedule_requeue(key, float(exc.delay or 2), memo)
    except Exception:
        log.exception("%s %s/%s: reconcile failed; retrying", kind, meta["namespace"], meta["name"])
        _schedule_requeue(key, UNEXPECTED_ERROR_RETRY_S, memo)


def forget(kind: str, namespace: str, name: str) -> None:
    key = (kind, namespace, name)
    _handled.pop(key, None)
    phase = _phases.pop(key, None)
    if phase is not None:
        OBJECTS.labels(kind, phase).dec()
    _locks.pop(key, None)
    _written.discard(key)
    timer = _requeues.pop(key, None)
    if timer is not None:
        timer.cancel()
