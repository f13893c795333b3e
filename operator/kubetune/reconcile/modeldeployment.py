"""ModelDeployment: desired variants vs observed, and the status that follows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubetune.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Phase
from kubetune.kube.client import KubeClient
from kubetune.reconcile.accept import accepted, parse_spec
from kubetune.reconcile.common import Event, Outcome


async def reconcile(client: KubeClient, obj: dict[str, Any], now: datetime, context: Any) -> Outcome:
    generation = obj["metadata"].get("generation")
    status = ModelDeploymentStatus.model_validate(obj.get("status") or {})
    spec, problem = parse_spec(ModelDeploymentSpec, obj)
    status.conditions = accepted(status.conditions, generation, now, problem=problem)
    events = []
    if spec is None:
        if status.phase != Phase.FAILED:
            events.append(Event("Warning", "InvalidSpec", problem))
        status.phase = Phase.FAILED
    elif status.phase is None:
        status.phase = Phase.PENDING
        events.append(Event("Normal", "Accepted", "ModelDeployment accepted"))
        status.ready_variants = f"0/{len(spec.variants)}"
    status.observed_generation = generation
    return Outcome(status=status.to_wire(), events=events)
