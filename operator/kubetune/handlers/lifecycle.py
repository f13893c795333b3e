"""Operator start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import kopf

from kubetune.handlers import resync, runtime


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    runtime.configure(settings)
    port = os.environ.get("KUBETUNE_METRICS_PORT", "")
    await runtime.start(memo, int(port) if port else None)
    interval = float(os.environ.get("KUBETUNE_RESYNC_SECONDS", "30"))
    memo.resync = asyncio.create_task(resync.loop(memo, interval), name="kubetune-resync")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = getattr(memo, "resync", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await runtime.stop(memo)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, else the kubeconfig (no extra client library needed)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
