"""Kubernetes Events about the objects the operator reconciles (best effort)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubetune.api.common import GROUP
from kubetune.builders.common import FIELD_MANAGER, child_name
from kubetune.kube.client import ApiError, KubeClient
from kubetune.planning.plan import Event

log = logging.getLogger("kubetune")


def event_manifest(obj: Mapping[str, Any], event: Event, when: datetime, instance: str) -> dict[str, Any]:
    meta = obj["metadata"]
    stamp = when.isoformat().replace("+00:00", "Z")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": child_name(meta["name"], f"{int(time.time() * 1000):x}", limit=253),
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": f"{GROUP}/operator",
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(
    client: KubeClient, obj: Mapping[str, Any], event: Event, when: datetime, instance: str
) -> None:
    try:
        await client.create(event_manifest(obj, event, when, instance))
    except ApiError as exc:  # Events are best effort; never fail a reconcile for one
        meta = obj["metadata"]
        log.warning(
            "could not post event %s on %s/%s: %s", event.reason, meta["namespace"], meta["name"], exc
        )
