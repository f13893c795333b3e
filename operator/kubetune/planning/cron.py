"""Cron expressions in a time zone: parsing (with a message naming the field) and the times they fire.

The engine is cronsim (the parser Healthchecks.io runs: Debian cron semantics, DST handled in the
schedule's zone); it has no `@daily` macros, so they are expanded here as Kubernetes CronJob does.
All times in and out are aware datetimes in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class CronError(ValueError):
    """An unusable schedule; `field` is the spec field to name in the condition."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Cron:
    expression: str
    zone: ZoneInfo

    def _iter(self, start: datetime, *, reverse: bool) -> CronSim:
        return CronSim(self.expression, start.astimezone(self.zone), reverse=reverse)

    def next_after(self, when: datetime) -> datetime:
        """The first firing strictly after `when`."""
        return next(self._iter(when, reverse=False)).astimezone(UTC)

    def latest_at_or_before(self, when: datetime) -> datetime | None:
        """The last firing at or before `when` (None if the expression never fired before)."""
        try:
            return next(self._iter(when + timedelta(seconds=1), reverse=True)).astimezone(UTC)
        except StopIteration:
            return None

    def count_between(self, after: datetime, until: datetime, limit: int) -> int:
        """How many firings fall in (after, until], counting at most `limit` + 1."""
        count = 0
        for fired in self._iter(after, reverse=False):
            if fired.astimezone(UTC) > until or count > limit:
                break
            count += 1
        return count


def parse_cron(schedule: str, time_zone: str | None) -> Cron:
    """The schedule in its zone, or CronError naming spec.schedule or spec.timeZone."""
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError("spec.timeZone", f"unknown IANA time zone {time_zone!r}") from None
    expression = MACROS.get(schedule.strip(), schedule.strip())
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=zone))
    except CronSimError as exc:
        raise CronError("spec.schedule", f"{schedule!r}: {exc}") from None
    return Cron(expression, zone)
