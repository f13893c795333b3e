"""Runtime LoRA loading: bring a running vLLM pod's operator-managed adapters to a desired set.

Adapters that follow a FineTuneSchedule are not `--lora-modules`: each revision is loaded into the
running pods under a versioned name (`versioned_adapter_name`) with vLLM's runtime LoRA API
(`VLLM_ALLOW_RUNTIME_LORA_UPDATING`, set by builders.vllm), and unloaded once no longer desired.
No pod restarts. Two rules:
- only managed names are touched: adapters loaded at startup (`--lora-modules`) and any name
  outside the managed prefixes stay as they are;
- a name is never reloaded from another path: vLLM may reuse prefix-cache blocks computed with the
  old weights across a same-name reload, so new content always gets a new name. Desiring a loaded
  name at a different path is a conflict in the plan, never a load.

`plan_adapter_sync` is pure; `sync_pod_adapters` does the HTTP against one pod, under the operator's
outbound rules (no redirects, capped bodies, a short timeout per call, errors that never repeat the
pod's answers).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import aiohttp

from kubetune.builders.common import child_name
from kubetune.builders.vllm import runtime_adapter_path
from kubetune.outbound import OutboundError, get, post
from kubetune.serving.resolution import FollowedAdapter, Resolution

LOAD_PATH = "/v1/load_lora_adapter"
UNLOAD_PATH = "/v1/unload_lora_adapter"
MODELS_PATH = "/v1/models"
DEFAULT_TIMEOUT_S = 30.0
"""Per call. Loading reads the adapter from the pod's volume; tens of MB take well under this."""


def versioned_adapter_name(adapter: str, revision: str) -> str:
    """`<adapter>-<revision>` (a run's FineTuneJob name), hashed down to a DNS label when longer."""
    return child_name(adapter, revision)


def revision_adapters(followed: FollowedAdapter, runs: Mapping[str, str]) -> dict[str, str]:
    """The desired entries for revisions of one followed adapter: run name → its adapter URI (under
    `followed.root_uri`) in, versioned name → in-pod path out. ValueError for a URI outside the root."""
    return {
        versioned_adapter_name(followed.name, run): runtime_adapter_path(followed, uri)
        for run, uri in sorted(runs.items())
    }


@dataclass(frozen=True)
class ManagedAdapters:
    """Which served names the operator owns on a pod: those starting with one of `prefixes`
    (`<adapter>-` of each followed adapter), except the `static` ones loaded at startup."""

    prefixes: tuple[str, ...]
    static: frozenset[str] = frozenset()

    @classmethod
    def following(cls, adapters: Collection[str], static: Collection[str] = ()) -> ManagedAdapters:
        return cls(tuple(sorted(f"{a}-" for a in adapters)), frozenset(static))

    @classmethod
    def of(cls, resolution: Resolution) -> ManagedAdapters:
        """The names the operator manages in the pods of a resolved variant."""
        return cls.following(
            [f.name for f in resolution.followed_adapters], [m.name for m in resolution.lora_modules]
        )

    def __contains__(self, name: object) -> bool:
        return (
            isinstance(name, str)
            and name not in self.static
            and any(name.startswith(prefix) and len(name) > len(prefix) for prefix in self.prefixes)
        )


@dataclass(frozen=True)
class AdapterSyncPlan:
    to_load: dict[str, str] = field(default_factory=dict)
    """name → in-pod path, in name order."""
    to_unload: tuple[str, ...] = ()
    conflicts: dict[str, str] = field(default_factory=dict)
    """Desired names that must not be loaded, with why."""

    @property
    def empty(self) -> bool:
        return not self.to_load and not self.to_unload


def plan_adapter_sync(
    loaded: Mapping[str, str], desired: Mapping[str, str], managed: ManagedAdapters
) -> AdapterSyncPlan:
    """What to load and unload so that the pod's managed adapters are exactly `desired`.

    `loaded` maps each LoRA name the pod serves to its path (as /v1/models lists them); `desired`
    maps managed names to in-pod paths. Loaded names outside `managed` are never unloaded.
    """
    to_load: dict[str, str] = {}
    conflicts: dict[str, str] = {}
    for name, path in sorted(desired.items()):
        if name not in managed:
            conflicts[name] = "not a name the operator manages (static or outside the followed prefixes)"
        elif name not in loaded:
            to_load[name] = path
        elif loaded[name] != path:
            # Never reload under the same name: stale prefix-cache blocks would survive it.
            conflicts[name] = f"already loaded from {loaded[name]}; new content needs a new name"
    to_unload = tuple(sorted(n for n in loaded if n in managed and n not in desired))
    return AdapterSyncPlan(to_load, to_unload, conflicts)


@dataclass(frozen=True)
class AdapterSyncResult:
    loaded: dict[str, str] = field(default_factory=dict)
    """Managed adapters the pod serves after the sync (name → path), as /v1/models reports them."""
    failed: dict[str, str] = field(default_factory=dict)
    """Desired or undesired names the sync could not settle, with a short reason of ours."""
    loaded_now: tuple[str, ...] = ()
    unloaded_now: tuple[str, ...] = ()
    error: str | None = None
    """Why the pod's adapters could not be read at all (nothing was changed then)."""

    @property
    def in_sync(self) -> bool:
        return self.error is None and not self.failed


def loaded_adapters(body: Any) -> dict[str, str]:
    """LoRA name → path from a /v1/models body: the cards with a `parent` (the base model has none).
    ValueError when the body is not a model list."""
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        raise ValueError("not a model list")
    adapters: dict[str, str] = {}
    for card in data:
        if not isinstance(card, Mapping):
            raise ValueError("not a model list")
        name, parent, root = card.get("id"), card.get("parent"), card.get("root")
        if isinstance(name, str) and isinstance(parent, str) and parent:
            adapters[name] = str(root) if root is not None else ""
    return adapters


def _status_reason(status: int) -> str:
    """Our words for a failed call: the pod's body is not repeated (it can be anything a user's
    image answers)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "unexpected status"
    return f"HTTP {status} {phrase}"


class _Pod:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
        self.session, self.root, self.timeout_s = session, base_url.rstrip("/"), timeout_s

    async def adapters(self) -> dict[str, str]:
        """OutboundError when the list cannot be read."""
        response = await get(self.session, self.root + MODELS_PATH, timeout_s=self.timeout_s)
        if response.status != HTTPStatus.OK:
            raise OutboundError(f"{MODELS_PATH}: {_status_reason(response.status)}")
        try:
            return loaded_adapters(json.loads(response.body))
        except ValueError as exc:
            raise OutboundError(f"{MODELS_PATH}: not an OpenAI model list") from exc

    async def call(self, path: str, payload: Mapping[str, str]) -> int:
        response = await post(self.session, self.root + path, timeout_s=self.timeout_s, json=payload)
        return response.status


async def _apply(pod: _Pod, plan: AdapterSyncPlan) -> tuple[list[str], list[str], dict[str, str]]:
    """Loads first (the new revision must answer before the old one goes), then unloads."""
    loaded: list[str] = []
    unloaded: list[str] = []
    failed: dict[str, str] = {}
    for name, path in plan.to_load.items():
        try:
            status = await pod.call(LOAD_PATH, {"lora_name": name, "lora_path": path})
        except OutboundError as exc:
            failed[name] = f"load: {exc}"
            continue
        if status == HTTPStatus.OK:
            loaded.append(name)
        elif status == HTTPStatus.BAD_REQUEST:
            # Maybe loaded meanwhile by another pass (vLLM refuses a second load with 400): the read-back
            # below settles it; if it is not there, this stays the reason.
            failed[name] = f"load refused: {_status_reason(status)}"
        elif status == HTTPStatus.NOT_FOUND:
            failed[name] = f"load: {_status_reason(status)} (no adapter at {path}, or runtime loading is off)"
        else:
            failed[name] = f"load: {_status_reason(status)}"
    for name in plan.to_unload:
        try:
            status = await pod.call(UNLOAD_PATH, {"lora_name": name})
        except OutboundError as exc:
            failed[name] = f"unload: {exc}"
            continue
        # 404: already gone, which is what was wanted (the read-back below confirms it).
        if status in (HTTPStatus.OK, HTTPStatus.NOT_FOUND):
            unloaded.append(name)
        else:
            failed[name] = f"unload: {_status_reason(status)}"
    return loaded, unloaded, failed


def _settle(
    after: Mapping[str, str],
    desired: Mapping[str, str],
    plan: AdapterSyncPlan,
    failed: dict[str, str],
    managed: ManagedAdapters,
) -> dict[str, str]:
    """The outcome is what the pod lists afterwards, not what the calls answered."""
    settled = dict(plan.conflicts)
    for name, reason in failed.items():
        done = after.get(name) == desired[name] if name in desired else name not in after
        if not done:
            settled[name] = reason
    for name, path in desired.items():
        if name not in settled and name in managed and after.get(name) != path:
            settled[name] = "not listed by the pod after loading"
    for name in plan.to_unload:
        if name not in settled and name in after:
            settled[name] = "still listed by the pod after unloading"
    return settled


async def sync_pod_adapters(
    base_url: str,
    desired: Mapping[str, str],
    *,
    managed: ManagedAdapters,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    session: aiohttp.ClientSession | None = None,
) -> AdapterSyncResult:
    """Make the managed adapters of the vLLM server at `base_url` (http://pod-ip:8000, no /v1) exactly
    `desired` (name → in-pod path). Idempotent: a second call with the same desire changes nothing."""
    own = session is None
    client = session or aiohttp.ClientSession()
    pod = _Pod(client, base_url, timeout_s)
    try:
        try:
            before = await pod.adapters()
        except OutboundError as exc:
            return AdapterSyncResult(error=str(exc))
        plan = plan_adapter_sync(before, desired, managed)
        after = before
        loaded: list[str] = []
        unloaded: list[str] = []
        failed: dict[str, str] = {}
        if not plan.empty:
            loaded, unloaded, failed = await _apply(pod, plan)
            try:
                after = await pod.adapters()
            except OutboundError as exc:
                return AdapterSyncResult(
                    failed=dict(plan.conflicts) | failed,
                    loaded_now=tuple(loaded),
                    unloaded_now=tuple(unloaded),
                    error=f"reading back: {exc}",
                )
    finally:
        if own:
            await client.close()
    return AdapterSyncResult(
        loaded={n: p for n, p in sorted(after.items()) if n in managed},
        failed=_settle(after, desired, plan, failed, managed),
        loaded_now=tuple(n for n in loaded if n in after),
        unloaded_now=tuple(n for n in unloaded if n in before and n not in after),
    )
