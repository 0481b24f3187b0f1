"""A small evaluator of five-field cron schedules (as pg_cron reads them, in UTC), for
running retention loops where pg_cron is not installed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from skene_pg.config import CRON_FIELDS  # the validator's bounds and names


def _bound(text: str, low: int, names: tuple[str, ...]) -> int:
    """A number, or a name (`mon`, `JAN`: any case) numbered from `low` (sun is 0)."""
    name = text.lower()
    return names.index(name) + low if name in names else int(text)


def _field(text: str, low: int, high: int, names: tuple[str, ...]) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, last = body.split("-", 1)
            start, end = _bound(first, low, names), _bound(last, low, names)
        else:
            start = _bound(body, low, names)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return values


class Schedule:
    """`0 9 * * *` and the like: minute hour day-of-month month day-of-week."""

    def __init__(self, expression: str) -> None:
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(f"{expression!r} is not a five-field cron schedule")
        parsed = [
            _field(text, low, high, names)
            for text, (_label, low, high, names) in zip(fields, CRON_FIELDS, strict=True)
        ]
        self.minutes, self.hours, self.days, self.months, weekdays = parsed
        self.weekdays = {d % 7 for d in weekdays}  # 7 is Sunday too
        # cron's rule: when both day fields are restricted, either may match
        self.any_day = fields[2] == "*" or fields[4] == "*"
        self.dom_star, self.dow_star = fields[2] == "*", fields[4] == "*"

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.dom_star and self.dow_star:
            return True
        if self.dom_star:
            return dow
        if self.dow_star:
            return dom
        return dom or dow

    def latest(self, now: datetime, horizon_days: int = 400) -> datetime | None:
        """The latest minute at or before `now` (UTC) the schedule fires, or None."""
        now = now.astimezone(UTC).replace(second=0, microsecond=0)
        day = now.replace(hour=0, minute=0)
        for back in range(horizon_days + 1):
            current = day - timedelta(days=back)
            if not self._day_matches(current):
                continue
            for hour in sorted(self.hours, reverse=True):
                for minute in sorted(self.minutes, reverse=True):
                    slot = current.replace(hour=hour, minute=minute)
                    if slot <= now:
                        return slot
        return None
