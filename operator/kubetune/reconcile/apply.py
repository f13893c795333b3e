"""The one generic applier: executes a Plan against the API, in the Plan's order.

Create-or-own: a child is created when its name is free and updated only while it is controlled by
the object that renders it (an owner reference with `controller: true` and that object's uid). An
object of the same name that belongs to someone else is never adopted (a force apply would take over
its fields, run the user's image with its token, and garbage-collect it with the parent): the pass
stops with `NameConflict`, which the reconciler turns into a condition naming the object.

Updates are server-side applies carrying the child's uid, a precondition: an object deleted or
replaced since it was checked fails the apply instead of being recreated or taken over. The uids of
checked children are remembered (`Ownership`, per parent) so a steady-state pass costs one request
per child, as a plain apply did; a new child costs a POST and the handover of its fields to the apply
manager, an existing one after a restart a POST (409), a read and the apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from kubetune.builders.common import FIELD_MANAGER
from kubetune.kube.client import ApiError, KubeClient
from kubetune.planning.plan import Plan

Manifest = dict[str, Any]
ChildKey = tuple[str, str, str | None, str]
"""(apiVersion, kind, namespace, name)"""


class NameConflict(Exception):
    """A child's name is taken by an object this parent does not control."""

    def __init__(self, kind: str, name: str, controller: str | None) -> None:
        held = f"controlled by {controller}" if controller else "not controlled by kubetune"
        super().__init__(
            f"{kind} {name} already exists and is {held}; kubetune does not adopt objects: "
            f"delete or rename that {kind}, or rename this object"
        )
        self.kind = kind
        self.name = name


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    ref = controller_of(obj)
    return ref is not None and ref.get("uid") == uid


def _key(manifest: Mapping[str, Any]) -> ChildKey:
    meta = manifest["metadata"]
    return (manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])


def _parent_uid(manifest: Mapping[str, Any]) -> str:
    ref = controller_of(manifest)
    if ref is None or not ref.get("uid"):
        raise ValueError(f"{manifest['kind']} {manifest['metadata']['name']} has no controller reference")
    return str(ref["uid"])


def _with_uid(manifest: Mapping[str, Any], uid: str) -> Manifest:
    return {**manifest, "metadata": {**manifest["metadata"], "uid": uid}}


def check_owned(stored: Mapping[str, Any], parent_uid: str) -> None:
    """NameConflict unless `stored` is controlled by `parent_uid`."""
    if controlled_by(stored, parent_uid):
        return
    ref = controller_of(stored)
    raise NameConflict(
        str(stored.get("kind", "object")),
        str(stored["metadata"]["name"]),
        f"{ref.get('kind')} {ref.get('name')}" if ref else None,
    )


def _handover_ops(stored: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """JSON patch turning our Update entry of `stored`'s managedFields into an Apply entry (guarded by
    `test` operations, so a list reordered meanwhile fails instead of rewriting another's entry)."""
    for index, entry in enumerate(stored["metadata"].get("managedFields") or []):
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Update":
            if entry.get("subresource"):
                continue
            at = f"/metadata/managedFields/{index}"
            return [
                {"op": "test", "path": f"{at}/manager", "value": FIELD_MANAGER},
                {"op": "test", "path": f"{at}/operation", "value": "Update"},
                {"op": "replace", "path": f"{at}/operation", "value": "Apply"},
            ]
    return None


async def _create(client: KubeClient, manifest: Manifest) -> Manifest:
    """POST (fails if the name is taken meanwhile, where an apply would merge into it), then hand the
    fields over to our apply manager: a POST records them as an Update, and fields an Update owns
    stay when a later apply drops them (an annotation, a replica count)."""
    stored = await client.create(manifest)
    for _ in range(3):  # a controller's status write may reorder managedFields in between
        ops = _handover_ops(stored)
        if ops is None:
            return stored
        try:
            return await client.patch_json(stored, ops)
        except ApiError as exc:
            if exc.status not in (409, 422):
                raise
        fresh = await client.get(
            manifest["apiVersion"], manifest["kind"], _key(manifest)[2], _key(manifest)[3]
        )
        if fresh is None:
            return stored
        stored = {**fresh, "apiVersion": manifest["apiVersion"], "kind": manifest["kind"]}
    return stored


class Ownership:
    """Children checked as controlled by their parent: their uids, by parent uid (one reconciler's)."""

    def __init__(self) -> None:
        self._uids: dict[str, dict[ChildKey, str]] = {}

    def get(self, parent: str, key: ChildKey) -> str | None:
        return self._uids.get(parent, {}).get(key)

    def remember(self, parent: str, key: ChildKey, uid: str) -> None:
        self._uids.setdefault(parent, {})[key] = uid

    def drop(self, parent: str, key: ChildKey) -> None:
        self._uids.get(parent, {}).pop(key, None)

    def forget(self, parent: str) -> None:
        self._uids.pop(parent, None)


async def apply_owned(client: KubeClient, manifest: Manifest, owned: Ownership | None = None) -> Manifest:
    """Create `manifest` if its name is free, else server-side apply it if we control it; what was stored.

    Raises NameConflict for an object of that name that this parent does not control.
    """
    parent, key = _parent_uid(manifest), _key(manifest)
    known = owned.get(parent, key) if owned is not None else None
    if known is not None:
        try:
            return await client.apply(_with_uid(manifest, known))
        except ApiError as exc:
            # 409: gone since (uid mismatch, nothing found); 422: replaced (uid is immutable). Check again.
            if exc.status not in (409, 422):
                raise
            assert owned is not None
            owned.drop(parent, key)
        return await _apply_checked(client, manifest, parent, key, owned)
    try:
        # Absent is the common case (a new object): one POST, no read first.
        stored = await _create(client, manifest)
    except ApiError as exc:
        if exc.status != 409:
            raise
        return await _apply_checked(client, manifest, parent, key, owned)
    if owned is not None:
        owned.remember(parent, key, str(stored["metadata"]["uid"]))
    return stored


async def _apply_checked(
    client: KubeClient, manifest: Manifest, parent: str, key: ChildKey, owned: Ownership | None
) -> Manifest:
    """Read the object that holds the name; apply over it only if it is ours (NameConflict otherwise)."""
    stored = await client.get(key[0], key[1], key[2], key[3])
    if stored is None:
        stored = await _create(client, manifest)  # deleted since: create it (a 409 now is a retry)
    else:
        check_owned({**stored, "kind": key[1]}, parent)
        stored = await client.apply(_with_uid(manifest, str(stored["metadata"]["uid"])))
    if owned is not None:
        owned.remember(parent, key, str(stored["metadata"]["uid"]))
    return stored


async def create_owned(client: KubeClient, manifest: Manifest, owned: Ownership | None = None) -> Manifest:
    """Create if absent (children whose spec is immutable: never applied again, so no field handover);
    an existing one is applied only if ours."""
    try:
        stored = await client.create(manifest)
    except ApiError as exc:
        if exc.status != 409:
            raise
        return await _apply_checked(client, manifest, _parent_uid(manifest), _key(manifest), owned)
    if owned is not None:
        owned.remember(_parent_uid(manifest), _key(manifest), str(stored["metadata"]["uid"]))
    return stored


async def apply_in_order(
    client: KubeClient, manifests: Sequence[Manifest], owned: Ownership | None = None
) -> list[Manifest]:
    """Create-or-own one after another (a later child may need an earlier one); what was stored."""
    return [await apply_owned(client, manifest, owned) for manifest in manifests]


async def create_if_absent(client: KubeClient, manifest: Manifest) -> Manifest | None:
    """Create `manifest` unless its name exists; what is stored either way (an existing object is not
    rewritten, and must be ours: NameConflict otherwise). None only if it was deleted again between our
    create and our read."""
    try:
        return await client.create(manifest)
    except ApiError as exc:
        if exc.status != 409:
            raise
    meta = manifest["metadata"]
    stored = await client.get(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])
    if stored is not None:
        check_owned({**stored, "kind": manifest["kind"]}, _parent_uid(manifest))
    return stored


async def execute(client: KubeClient, namespace: str, plan: Plan, owned: Ownership | None = None) -> None:
    # The shared children first: a Job must not start under a ServiceAccount name someone else holds.
    await asyncio.gather(*(apply_owned(client, manifest, owned) for manifest in plan.apply))
    await asyncio.gather(*(create_owned(client, manifest, owned) for manifest in plan.create))
    for delete in plan.delete:
        await client.delete(
            delete.api_version,
            delete.kind,
            namespace,
            delete.name,
            uid=delete.uid,
            propagation=delete.propagation,
        )
    for patch in plan.patch:
        await client.patch_merge(patch.api_version, patch.kind, namespace, patch.name, patch.patch)
    for manifest in plan.replace:
        await apply_owned(client, manifest, owned)
