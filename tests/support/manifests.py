"""Custom resources as the API server shows them, shared by the planner, reconciler and RBAC tests."""

from __future__ import annotations

from typing import Any


def minimal_ftj(name: str) -> dict[str, Any]:
    """The smallest valid FineTuneJob `name`, no namespace: a hub model, data and output on PVCs."""
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "Qwen/Qwen2.5-0.5B"},
            "dataset": {"uri": "pvc://data/train.jsonl"},
            "output": {"uri": "pvc://models/out"},
        },
    }


def ftj(*, generation: int = 1, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """FineTuneJob ns/demo: two nodes of one GPU, model, data and output on PVCs; `spec` added over."""
    obj: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "u-1", "generation": generation},
        "spec": {
            "baseModel": {"uri": "pvc://m/x"},
            "dataset": {"uri": "pvc://d/x.jsonl"},
            "output": {"uri": "pvc://o/x"},
            "resources": {"nodes": 2, "gpusPerNode": 1},
            **spec,
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def fts(created: str, template: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """FineTuneSchedule ns/nightly, hourly, created at `created`, never run: each run a FineTuneJob of
    spec `template`; `spec` added over."""
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneSchedule",
        "metadata": {
            "name": "nightly",
            "namespace": "ns",
            "uid": "s-1",
            "generation": 1,
            "creationTimestamp": created,
        },
        "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": template}, **spec},
        "status": {"observedGeneration": 1},
    }
