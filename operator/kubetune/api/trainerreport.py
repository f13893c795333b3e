"""The trainer's report: what rank 0 writes into its job's report ConfigMap, and the bounds it must keep.

The training pods' ServiceAccount may `patch` one object only: the ConfigMap `<job>-progress` that the
operator creates for the FineTuneJob (RBAC with `resourceNames`). Rank 0 merge-patches one key of it,
REPORT_KEY, with a `TrainerReport` as JSON; it has no access to the FineTuneJob's status. The operator
reads the key every pass, validates it against this model and the sanity rules of
`kubetune.status.trainer_report`, and copies only what passes into `status.progress`. The model's
bounds are deliberately wide (what any real run can produce) but finite, so a forged or corrupt report
can neither put NaN into status (the API server rejects it, stalling the pass) nor inflate it.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from kubetune.api.common import KubeModel

REPORT_KEY = "report.json"
"""The one key of the report ConfigMap the trainer writes."""
MAX_REPORT_BYTES = 4096
"""A progress report is ~300 bytes; anything much larger is not a report (and is never parsed)."""
ATTEMPT_ENV = "KUBETUNE_ATTEMPT"
"""The training Job's attempt (downward API, from the pod's `kubetune.io/attempt` label)."""

MAX_STEPS = 1_000_000_000
MAX_EPOCHS = 1000.0  # hyperparameters.epochs is at most 1000
MAX_LOSS = 1.0e4  # cross-entropy of a uniform guess over a 10^4000-token vocabulary: far beyond any run
MAX_TOKENS_PER_SECOND = 1.0e12
MAX_ATTEMPT = 100_000


class ReportedProgress(KubeModel):
    """Rank 0's live progress (percent and eta are the operator's; artifacts are never reported here)."""

    model_config = ConfigDict(allow_inf_nan=False)

    step: int = Field(ge=0, le=MAX_STEPS, description="Optimizer steps done in this attempt's run.")
    total_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS, description="Optimizer steps planned.")
    epoch: float | None = Field(default=None, ge=0, le=MAX_EPOCHS, description="Fractional epoch.")
    loss: float | None = Field(default=None, ge=0, le=MAX_LOSS, description="Latest training loss.")
    eval_loss: float | None = Field(default=None, ge=0, le=MAX_LOSS, description="Latest validation loss.")
    learning_rate: float | None = Field(
        default=None, ge=0, le=1, description="Current learning rate (spec peak is at most 1)."
    )
    tokens_per_second: float | None = Field(
        default=None, ge=0, le=MAX_TOKENS_PER_SECOND, description="Non-padding tokens per second, all ranks."
    )
    mfu: float | None = Field(default=None, ge=0, le=1, description="Model FLOPs utilisation, 0-1.")
    updated_at: datetime | None = Field(default=None, description="When rank 0 measured this.")


class TrainerReport(KubeModel):
    """The value of REPORT_KEY: the reporting attempt (a gang restart starts a new one) and its progress."""

    attempt: int = Field(ge=0, le=MAX_ATTEMPT, description="The training Job's attempt number.")
    progress: ReportedProgress = Field(description="Live progress.")
