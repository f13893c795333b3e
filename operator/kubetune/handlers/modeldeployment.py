"""ModelDeployment handlers: every trigger runs the same level-triggered reconcile."""

from __future__ import annotations

import os
from typing import Any

import kopf

from kubetune.api.common import GROUP, VERSION
from kubetune.api.modeldeployment import KIND, PLURAL
from kubetune.handlers import runtime
from kubetune.reconcile import modeldeployment

RESYNC_SECONDS = float(os.environ.get("KUBETUNE_RESYNC_SECONDS", "30"))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def reconcile_modeldeployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await runtime.run(KIND, modeldeployment.reconcile, body, memo, None)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def forget_modeldeployment(name: str, namespace: str | None, **_: Any) -> None:
    runtime.forget(KIND, namespace or "", name)
