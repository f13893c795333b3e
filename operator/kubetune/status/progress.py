"""FineTuneJob training progress: percent and ETA from rank 0's report."""

from __future__ import annotations

from datetime import datetime

from kubetune.api.finetunejob import Progress


def format_duration(seconds: float) -> str:
    total = max(round(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def compute_progress(progress: Progress | None, start: datetime | None, now: datetime) -> Progress | None:
    """percent and eta from rank 0's report.

    eta = (totalSteps - step) * (updatedAt - start) / step - (now - updatedAt), at least 0:
    the mean step time since the training pods started (restarts and staging included, so it
    errs long), minus the time since the report.
    """
    if progress is None:
        return None
    updated = progress.model_copy()
    total = progress.total_steps
    if not total:
        return updated
    updated.percent = min(100, progress.step * 100 // total)
    if progress.step <= 0 or start is None:
        return updated
    reported = progress.updated_at or now
    per_step = max((reported - start).total_seconds(), 0.0) / progress.step
    remaining = max(total - progress.step, 0) * per_step - max((now - reported).total_seconds(), 0.0)
    updated.eta = format_duration(max(remaining, 0.0))
    return updated
