"""Running the serving smoke test from the reconcile loop without stalling it.

A test runs in a background task per variant; a pass waits for it only briefly (the settings'
`smoke_wait_seconds`) and otherwise reports it as running, picking the verdict up on a later pass.
The whole test is bounded by `smoke_timeout_seconds`.
"""

from __future__ import annotations

import asyncio

from kubetune.api.conditions import Reason
from kubetune.planning.smoke import SmokeRequest, tagged, transport_only
from kubetune.serving.smoke import SmokeVerdict, run_smoke_test

TaskKey = tuple[str, str]
"""(ModelDeployment uid, variant)"""


class SmokeTests:
    """The smoke tests under way, one background task per (ModelDeployment, variant)."""

    def __init__(self, *, wait_s: float, timeout_s: float) -> None:
        self.wait_s = wait_s
        self.timeout_s = timeout_s
        self._tasks: dict[TaskKey, tuple[str, asyncio.Task[SmokeVerdict]]] = {}

    def running(self, uid: str) -> bool:
        """Whether a smoke test of any of this ModelDeployment's variants is under way."""
        return any(key[0] == uid for key in self._tasks)

    def cancel(self, uid: str) -> None:
        """Stop this ModelDeployment's smoke tests (it was deleted)."""
        for key in [k for k in self._tasks if k[0] == uid]:
            self._tasks.pop(key)[1].cancel()

    async def verdict(self, task_key: TaskKey, request: SmokeRequest) -> SmokeVerdict:
        """The verdict for `request.key` if the test finished (tagged for the cache), else a pending one."""
        current = self._tasks.get(task_key)
        if current is not None and current[0] != request.key:
            current[1].cancel()  # a test of containers that are gone
            current = None
        if current is None:
            current = (request.key, asyncio.create_task(self._run(request)))
            self._tasks[task_key] = current
        task = current[1]
        await asyncio.wait({task}, timeout=self.wait_s)
        if not task.done():
            return SmokeVerdict.pending(f"smoke test running against {request.url}")
        del self._tasks[task_key]
        verdict = task.result()
        if verdict.status == "Unknown":
            return verdict
        if verdict.status == "False" and transport_only(verdict):
            return SmokeVerdict("Unknown", Reason.PENDING, f"{verdict.message}; retrying")
        return tagged(verdict, request.key)

    async def _run(self, request: SmokeRequest) -> SmokeVerdict:
        timeout = self.timeout_s
        try:
            return await asyncio.wait_for(
                run_smoke_test(
                    request.url,
                    request.model,
                    request.prompts,
                    max_tokens=request.spec.max_tokens,
                    min_stop_fraction=request.spec.min_stop_fraction,
                    timeout_s=timeout,
                ),
                timeout=timeout,
            )
        except TimeoutError:
            return SmokeVerdict.pending(
                f"smoke test against {request.url} did not finish within {timeout:.0f}s; retrying"
            )
