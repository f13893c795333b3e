"""ModelDeployment and FineTuneJob objects as the API server returns them, for table tests."""

from __future__ import annotations

from typing import Any

from kubetune.api.modeldeployment import Variant

UID = "6f1c1d2e-0000-4000-8000-000000000001"


def variant(name: str = "a", **fields: Any) -> Variant:
    fields.setdefault("model", {"uri": "pvc://models/base"})
    return Variant.model_validate({"name": name, **fields})


def model_deployment(
    variants: list[dict[str, Any]],
    *,
    name: str = "chat",
    namespace: str = "ml",
    generation: int = 1,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": UID, "generation": generation},
        "spec": {"variants": variants, **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


def finetunejob(
    name: str,
    phase: str | None,
    *,
    artifacts: dict[str, str] | None = None,
    lineage: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    method: str = "lora",
    rank: int | None = None,
    failed_message: str | None = None,
    base_uri: str = "pvc://models/qwen",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "baseModel": {"uri": base_uri},
        "dataset": {"uri": "pvc://data/train.jsonl"},
        "method": method,
        "output": {"uri": f"pvc://out/{name}"},
    }
    if method != "full" and (artifacts or {}).get("mergedModelUri"):
        spec["output"]["mergeAdapter"] = True  # a run reports a merged model only when asked for one
    if rank is not None:
        spec["lora"] = {"r": rank}
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if failed_message is not None:
        status["conditions"] = [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": failed_message,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ]
    if artifacts is not None:
        status["artifacts"] = artifacts
    if lineage is not None:
        status["lineage"] = lineage
    if metrics is not None:
        status["metrics"] = metrics
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": spec,
        "status": status,
    }
