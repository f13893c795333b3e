"""Per-kind reconcilers: observe → plan (`kubetune.planning`) → apply; each keeps its objects' state."""

from __future__ import annotations

from kubetune.controller.controller import Reconciler
from kubetune.reconcile.finetunejob import FineTuneJobReconciler
from kubetune.reconcile.finetuneschedule import Clock, FineTuneScheduleReconciler
from kubetune.reconcile.modeldeployment import ModelDeploymentReconciler
from kubetune.settings import OperatorSettings


def reconcilers(settings: OperatorSettings, *, schedule_clock: Clock | None = None) -> list[Reconciler]:
    """One reconciler per kind; `schedule_clock` lets tests move FineTuneSchedules through time."""
    return [
        FineTuneJobReconciler(settings),
        ModelDeploymentReconciler(settings),
        FineTuneScheduleReconciler(settings, clock=schedule_clock),
    ]
