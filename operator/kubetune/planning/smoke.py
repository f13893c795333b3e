"""What a variant's smoke test is about, where it is sent, and what its verdict is worth. Pure.

A verdict is cached in the status: the variant's `smokeTested` names what it is about (`<uri>@<hash>`:
the served artifact and a hash of the pod's containers: image, args, env). It stays valid until
either changes, so replica changes, canary steps and operator restarts do not re-run it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from kubetune.api.common import GROUP, Condition
from kubetune.api.conditions import ConditionType
from kubetune.api.modeldeployment import SmokeTest, Variant
from kubetune.builders.common import Manifest, stable_hash
from kubetune.builders.modeldeployment import served_uri
from kubetune.serving.resolution import Resolution
from kubetune.serving.smoke import SmokeVerdict
from kubetune.status.conditions import find_condition

SMOKE_URL_ANNOTATION_PREFIX = f"{GROUP}/smoke-test-url-"
"""`kubetune.io/smoke-test-url-<variant>`: test this OpenAI base URL instead of the variant's Service."""
_TRANSPORT_FAILURE = "request failed:"
# The variant's own vLLM always serves the name it is asked for: a 404 means the request reached some
# other server (a Service or kube-proxy rule not yet settled on a pod that just turned Ready), which
# says nothing about the model.
_NOT_THIS_VARIANTS_SERVER = "HTTP 404:"


def smoke_key(variant: Variant, resolution: Resolution, deployment: Manifest, smoke: SmokeTest) -> str:
    """What a verdict is about: the artifact served under the variant's name, the containers, and
    the test itself (a user who fixes the prompts or the stop requirement gets a new verdict)."""
    pod = deployment["spec"]["template"]["spec"]
    tested = {
        "containers": pod["containers"],
        "init": pod.get("initContainers", []),
        "smokeTest": smoke.to_wire(),
    }
    return f"{served_uri(variant, resolution)}@{stable_hash(tested, 10)}"


def tested_key(conditions: Sequence[Condition], tested: str | None) -> str | None:
    """What the standing verdict (SmokeTestPassed True or False) is about; None when there is none."""
    condition = find_condition(conditions, ConditionType.SMOKE_TEST_PASSED)
    if condition is None or condition.status == "Unknown":
        return None
    return tested


def overridden_url(mdep: Mapping[str, Any], annotation: str, default: str, *, allowed: bool) -> str:
    """The URL in `annotation` where the operator's settings allow overrides; else `default`."""
    # The override would let anyone who may edit a ModelDeployment make the operator POST to any
    # URL, so it is honoured only where the operator's own settings allow it (tests, dev).
    if not allowed:
        return default
    annotations = mdep["metadata"].get("annotations") or {}
    return str(annotations.get(annotation) or default)


def base_url(mdep: Mapping[str, Any], variant_name: str, endpoint: str, *, allowed: bool) -> str:
    return overridden_url(mdep, SMOKE_URL_ANNOTATION_PREFIX + variant_name, endpoint, allowed=allowed)


def tagged(verdict: SmokeVerdict, key: str) -> SmokeVerdict:
    return dataclasses.replace(verdict, tested=key)


def transport_only(verdict: SmokeVerdict) -> bool:
    """Every failing prompt failed to connect, timed out or reached a server that does not serve the
    variant's model: no verdict on the model, try again."""
    failing = [o for o in verdict.outcomes if o.problem is not None]
    return bool(failing) and all(
        o.problem.startswith((_TRANSPORT_FAILURE, _NOT_THIS_VARIANTS_SERVER)) for o in failing if o.problem
    )


@dataclasses.dataclass(frozen=True)
class SmokeRequest:
    """One variant's test: `key` names what is tested (see `smoke_key`)."""

    key: str
    url: str
    model: str
    prompts: Sequence[str]
    spec: SmokeTest
