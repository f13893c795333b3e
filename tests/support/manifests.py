"""Custom resources as the API server shows them, shared by the planner, reconciler and RBAC tests."""

from __future__ import annotations

from typing import Any


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
