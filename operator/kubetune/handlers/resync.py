"""Periodic level-triggered resync of every watched object, from the watch stream's cache.

kopf timers would do this per object, but each timer puts a finalizer on its object (so a
FineTuneJob could not be deleted while the operator is down) and costs a task and a patch
per object. Instead, `on.event` keeps the latest body of each object in memory (no API
writes) and one loop re-runs the reconciler for each of them every `interval` seconds —
controller-runtime's SyncPeriod, in kopf terms.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kubetune.handlers import runtime

log = logging.getLogger("kubetune.resync")
RESYNC = "resync"  # the context reconcilers get on periodic passes (they may do fuller work then)

_latest: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
_reconcilers: dict[str, runtime.Reconciler] = {}
_trigger_gate = asyncio.Semaphore(64)


def register(kind: str, reconciler: runtime.Reconciler) -> None:
    _reconcilers[kind] = reconciler
    _latest.setdefault(kind, {})


def remember(kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    if event_type == "DELETED" or meta.get("deletionTimestamp"):
        _latest[kind].pop(key, None)
    else:
        _latest[kind][key] = dict(body)


async def _one(kind: str, body: dict[str, Any], memo: kopf.Memo, gate: asyncio.Semaphore) -> None:
    async with gate:
        try:
            await runtime.run(kind, _reconcilers[kind], body, memo, RESYNC)
        except kopf.TemporaryError as exc:
            log.debug("resync of %s %s: %s", kind, body["metadata"]["name"], exc)
        except Exception:
            log.exception("resync of %s %s failed", kind, body["metadata"]["name"])


async def trigger(kind: str, namespace: str, name: str, memo: kopf.Memo) -> None:
    """Reconcile one object now, from its latest cached body (no-op if it is not watched)."""
    body = _latest.get(kind, {}).get((namespace, name))
    if body is not None:
        await _one(kind, body, memo, _trigger_gate)


runtime.set_requeue_hook(trigger)


async def loop(memo: kopf.Memo, interval: float, concurrency: int = 16) -> None:
    gate = asyncio.Semaphore(concurrency)
    while True:
        await asyncio.sleep(interval)
        snapshot = [(kind, body) for kind, objects in _latest.items() for body in list(objects.values())]
        await asyncio.gather(*(_one(kind, body, memo, gate) for kind, body in snapshot))
