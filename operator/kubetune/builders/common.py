"""Naming, labels and owner references shared by every builder. Pure functions only."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubetune.api.common import GROUP

Manifest = dict[str, Any]

MANAGED_BY = "kubetune-operator"
FIELD_MANAGER = "kubetune-operator"
LABEL_JOB = f"{GROUP}/job-name"
LABEL_DEPLOYMENT = f"{GROUP}/deployment"
LABEL_VARIANT = f"{GROUP}/variant"
LABEL_ROLE = f"{GROUP}/role"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
"""Node label naming the GPU model (NVIDIA GPU feature discovery); `gpuType` selects on it."""
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
MAX_NAME = 63


def child_name(parent: str, *parts: str | int, limit: int = MAX_NAME) -> str:
    """`<parent>-<part>...`, truncated to `limit` with a stable hash suffix when too long."""
    name = "-".join([parent, *(str(p) for p in parts if p != "")])
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def with_image_pull_secrets(workload: Manifest, names: Sequence[str]) -> Manifest:
    """A Job or Deployment whose pods pull with `names` (the chart's `imagePullSecrets`)."""
    if not names:
        return workload
    template = workload["spec"]["template"]
    pod = {**template["spec"], "imagePullSecrets": [{"name": name} for name in names]}
    return {**workload, "spec": {**workload["spec"], "template": {**template, "spec": pod}}}


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable value, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """Controller owner reference to a custom resource read from the API."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def standard_labels(*, name: str, component: str, instance: str) -> dict[str, str]:
    """`app.kubernetes.io/*` labels of every child."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "kubetune",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def metadata(
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any],
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(sorted(labels.items())),
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return meta


# Every container kubetune makes: Pod Security "restricted", and a read-only root filesystem (what a
# program writes goes to the emptyDirs of builders/writable.py).
RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
    "readOnlyRootFilesystem": True,
}
