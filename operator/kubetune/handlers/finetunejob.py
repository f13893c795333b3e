"""FineTuneJob handlers: every trigger runs the same level-triggered reconcile."""

from __future__ import annotations

from typing import Any

import kopf

from kubetune.api.common import GROUP, VERSION
from kubetune.api.finetunejob import KIND, PLURAL
from kubetune.handlers import resync, runtime
from kubetune.reconcile import finetunejob

resync.register(KIND, finetunejob.reconcile)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_finetunejob(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await runtime.run(KIND, finetunejob.reconcile, body, memo, None)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def cache_finetunejob(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    resync.remember(KIND, event.get("type"), body)
    if event.get("type") == "DELETED":
        # The watch's DELETED event, not an on.delete handler: those need a finalizer to be sure to run.
        meta = body["metadata"]
        runtime.forget(KIND, meta["namespace"], meta["name"])
        finetunejob.forget(meta["uid"])
