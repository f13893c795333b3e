"""Running the serving smoke test from the reconcile loop without stalling it.

A test runs in a background task per variant; a pass waits for it only briefly
(`KUBETUNE_SMOKE_WAIT_SECONDS`) and otherwise reports it as running, picking the verdict up on a
later pass. The whole test is bounded by `KUBETUNE_SMOKE_TIMEOUT_SECONDS`.

A verdict is cached in the status: the SmokeTestPassed message ends with `[tested <uri>@<hash>]`,
the served artifact and a hash of the pod's containers (image, args, env). It stays valid until
either changes, so replica changes, canary steps and operator restarts do not re-run it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from kubetune.api.common import GROUP, Condition
from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.modeldeployment import SmokeTest, Variant
from kubetune.builders.common import Manifest, stable_hash
from kubetune.builders.modeldeployment import served_uri
from kubetune.serving.resolution import Resolution
from kubetune.serving.smoke import SmokeVerdict, run_smoke_test
from kubetune.status.conditions import find_condition

SMOKE_URL_ANNOTATION_PREFIX = f"{GROUP}/smoke-test-url-"
"""`kubetune.io/smoke-test-url-<variant>`: test this OpenAI base URL instead of the variant's Service."""
SMOKE_URL_OVERRIDE_ENV = "KUBETUNE_SMOKE_URL_OVERRIDE"
_TESTED = re.compile(r" \[tested (?P<key>[^\]]+)\]$")
_TRANSPORT_FAILURE = "request failed:"

TaskKey = tuple[str, str, str]
_tasks: dict[TaskKey, tuple[str, asyncio.Task[SmokeVerdict]]] = {}


def _wait_s() -> float:
    return float(os.environ.get("KUBETUNE_SMOKE_WAIT_SECONDS", "5"))


def _timeout_s() -> float:
    return float(os.environ.get("KUBETUNE_SMOKE_TIMEOUT_SECONDS", "300"))


def running(namespace: str, name: str) -> bool:
    """Whether a smoke test of any of this ModelDeployment's variants is under way."""
    return any(key[:2] == (namespace, name) for key in _tasks)


def cancel(namespace: str, name: str) -> None:
    """Stop this ModelDeployment's smoke tests (it was deleted)."""
    for key in [k for k in _tasks if k[:2] == (namespace, name)]:
        _tasks.pop(key)[1].cancel()


def smoke_key(variant: Variant, resolution: Resolution, deployment: Manifest) -> str:
    """What a verdict is about: the artifact served under the variant's name and the containers."""
    pod = deployment["spec"]["template"]["spec"]
    containers = {"containers": pod["containers"], "init": pod.get("initContainers", [])}
    return f"{served_uri(variant, resolution)}@{stable_hash(containers, 10)}"


def tested_key(conditions: Sequence[Condition]) -> str | None:
    condition = find_condition(conditions, ConditionType.SMOKE_TEST_PASSED)
    if condition is None or condition.status == "Unknown":
        return None
    match = _TESTED.search(condition.message or "")
    return match.group("key") if match else None


def overridden_url(mdep: Mapping[str, Any], annotation: str, default: str) -> str:
    """The URL in `annotation`, where the operator's environment allows overrides; else `default`."""
    # The override would let anyone who may edit a ModelDeployment make the operator POST to any
    # URL, so it is honoured only where the operator's own environment allows it (tests, dev).
    if os.environ.get(SMOKE_URL_OVERRIDE_ENV) != "allow":
        return default
    annotations = mdep["metadata"].get("annotations") or {}
    return str(annotations.get(annotation) or default)


def base_url(mdep: Mapping[str, Any], variant_name: str, endpoint: str) -> str:
    return overridden_url(mdep, SMOKE_URL_ANNOTATION_PREFIX + variant_name, endpoint)


def _tagged(verdict: SmokeVerdict, key: str) -> SmokeVerdict:
    return dataclasses.replace(verdict, message=f"{verdict.message} [tested {key}]")


def _transport_only(verdict: SmokeVerdict) -> bool:
    """Every failing prompt failed to connect or time out: no verdict on the model, try again."""
    failing = [o for o in verdict.outcomes if o.problem is not None]
    return bool(failing) and all(o.problem.startswith(_TRANSPORT_FAILURE) for o in failing if o.problem)


async def _run(url: str, model: str, prompts: Sequence[str], spec: SmokeTest) -> SmokeVerdict:
    timeout = _timeout_s()
    try:
        return await asyncio.wait_for(
            run_smoke_test(
                url,
                model,
                prompts,
                max_tokens=spec.max_tokens,
                min_stop_fraction=spec.min_stop_fraction,
                timeout_s=timeout,
            ),
            timeout=timeout,
        )
    except TimeoutError:
        return SmokeVerdict.pending(
            f"smoke test against {url} did not finish within {timeout:.0f}s; retrying"
        )


async def smoke_verdict(
    task_key: TaskKey, key: str, url: str, model: str, prompts: Sequence[str], spec: SmokeTest
) -> SmokeVerdict:
    """The verdict for `key` if the test finished (tagged for the cache), else a pending one."""
    current = _tasks.get(task_key)
    if current is not None and current[0] != key:
        current[1].cancel()  # a test of containers that are gone
        current = None
    if current is None:
        current = (key, asyncio.create_task(_run(url, model, prompts, spec)))
        _tasks[task_key] = current
    task = current[1]
    await asyncio.wait({task}, timeout=_wait_s())
    if not task.done():
        return SmokeVerdict.pending(f"smoke test running against {url}")
    del _tasks[task_key]
    verdict = task.result()
    if verdict.status == "Unknown":
        return verdict
    if verdict.status == "False" and _transport_only(verdict):
        return SmokeVerdict("Unknown", Reason.PENDING, f"{verdict.message}; retrying")
    return _tagged(verdict, key)
