"""FineTuneJob handlers: every trigger runs the same level-triggered reconcile."""

from __future__ import annotations

from typing import Any

import kopf

from kubetune.api.common import GROUP, VERSION
from kubetune.api.finetunejob import KIND, PLURAL
from kubetune.handlers import resync, runtime
from kubetune.reconcile import finetunejob

resync.register(KIND, finetunejob.reconcile)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def finetunejob_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    resync.remember(KIND, event.get("type"), body)
    meta = body["metadata"]
    if event.get("type") == "DELETED":
        # The watch's DELETED event, not an on.delete handler: those need a finalizer to be sure to run.
        runtime.forget(KIND, meta["namespace"], meta["name"])
        finetunejob.forget(meta["uid"])
        return
    await runtime.on_event(KIND, finetunejob.reconcile, body, memo)
