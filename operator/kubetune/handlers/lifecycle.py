"""Operator start-up and shutdown."""

from __future__ import annotations

import os
from typing import Any

import kopf

from kubetune.handlers import runtime


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    runtime.configure(settings)
    port = os.environ.get("KUBETUNE_METRICS_PORT", "")
    await runtime.start(memo, int(port) if port else None)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await runtime.stop(memo)
