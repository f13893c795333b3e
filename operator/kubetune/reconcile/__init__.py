"""Per-kind reconcilers: observe → plan (`kubetune.planning`) → apply; each keeps its objects' state."""

from __future__ import annotations

from kubetune.controller.controller import Reconciler
from kubetune.reconcile.finetunejob import FineTuneJobReconciler
from kubetune.reconcile.modeldeployment import ModelDeploymentReconciler
from kubetune.settings import OperatorSettings


def reconcilers(settings: OperatorSettings) -> list[Reconciler]:
    return [FineTuneJobReconciler(settings), ModelDeploymentReconciler(settings)]
