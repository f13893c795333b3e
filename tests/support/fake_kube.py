"""An in-memory stand-in for KubeClient: enough of the API server for fast reconcile tests.

Objects are stored by (apiVersion, kind, namespace, name); apply replaces (one field manager: ours),
status patches merge, deletes honour a uid precondition, and every call is recorded in `calls`.
The real API server (tests/integration) stays the authority on wiring; this fake checks what a
pass plans and applies.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from kubetune.kube.client import ApiError

Key = tuple[str, str, str | None, str]


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _matches(labels: Mapping[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKube:
    def __init__(self, *objects: Mapping[str, Any], crds: set[str] | frozenset[str] = frozenset()) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.crds = set(crds)
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.requests = 0
        self._uids = itertools.count(1)
        for obj in objects:
            self.put(obj)

    @staticmethod
    def key(obj: Mapping[str, Any]) -> Key:
        meta = obj["metadata"]
        return (obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])

    def put(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(dict(obj))
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta.setdefault("generation", 1)
        self.objects[self.key(stored)] = stored
        return stored

    def find(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((api_version, kind, namespace, name))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for (_, k, _, _), o in sorted(self.objects.items()) if k == kind]

    def _record(self, verb: str, kind: str, name: str) -> None:
        self.requests += 1
        self.calls.append((verb, kind, name))

    def verbs(self, verb: str) -> list[tuple[str, str]]:
        return [(kind, name) for v, kind, name in self.calls if v == verb]

    def writes(self) -> list[tuple[str, str]]:
        """Children written: created (name free) or applied (already ours)."""
        return [(kind, name) for v, kind, name in self.calls if v in ("apply", "create")]

    # The KubeClient surface the operator uses.

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        self._record("get", kind, name)
        found = self.find(api_version, kind, namespace, name)
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self, api_version: str, kind: str, namespace: str | None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        self._record("list", kind, "")
        return [
            copy.deepcopy(o)
            for (v, k, ns, _), o in sorted(self.objects.items())
            if (v, k) == (api_version, kind)
            and (namespace is None or ns == namespace)
            and _matches(o["metadata"].get("labels") or {}, label_selector)
        ]

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._record("apply", manifest["kind"], manifest["metadata"]["name"])
        current = self.objects.get(self.key(manifest))
        uid = manifest["metadata"].get("uid")
        if uid is not None and current is None:  # the API server's answers to a uid precondition
            raise ApiError(409, "Conflict", f"uid mismatch: {uid}, and no existing object was found")
        if uid is not None and current is not None and current["metadata"]["uid"] != uid:
            raise ApiError(422, "Invalid", "metadata.uid: field is immutable")
        stored = copy.deepcopy(dict(manifest))
        if current is not None:
            stored["metadata"] = {**current["metadata"], **stored["metadata"]}
            if "status" in current:
                stored["status"] = current["status"]
        return copy.deepcopy(self.put(stored))

    async def ensure(self, manifest: Mapping[str, Any]) -> None:
        self._record("ensure", manifest["kind"], manifest["metadata"]["name"])
        if self.key(manifest) not in self.objects:
            self.put(manifest)

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._record("create", manifest["kind"], manifest["metadata"]["name"])
        if self.key(manifest) in self.objects:
            raise ApiError(409, "AlreadyExists", f"{manifest['metadata']['name']} already exists")
        return copy.deepcopy(self.put(manifest))

    async def patch_json(self, obj: Mapping[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
        self._record("patch/json", obj["kind"], obj["metadata"]["name"])
        current = self.objects.get(self.key(obj))
        if current is None:
            raise ApiError(404, "NotFound", f"{obj['metadata']['name']} not found")
        return copy.deepcopy(current)

    async def patch_merge(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        self._record(f"patch{'/' + subresource if subresource else ''}", kind, name)
        current = self.find(api_version, kind, namespace, name)
        if current is None:
            raise ApiError(404, "NotFound", f'{kind.lower()}s "{name}" not found')
        _merge(current, patch)
        return copy.deepcopy(current)

    async def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
        uid: str | None = None,
    ) -> bool:
        self._record("delete", kind, name)
        current = self.find(api_version, kind, namespace, name)
        if current is None:
            return False
        if uid is not None and current["metadata"]["uid"] != uid:
            raise ApiError(409, "Conflict", "uid precondition failed")
        del self.objects[self.key(current)]
        return True

    async def crd_exists(self, name: str) -> bool:
        self._record("get", "CustomResourceDefinition", name)
        return name in self.crds

    async def close(self) -> None:
        return None
