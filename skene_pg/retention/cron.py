"""Five-field cron schedules as pg_cron reads them (in UTC): the grammar that
`skene-pg apply` validates with, and a small evaluator for running retention loops
where pg_cron does not (the worker's scheduler). One table of fields serves both."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
CRON_FIELDS = (  # label, lowest, highest, names (numbered from lowest)
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_CRON_PART = re.compile(r"(?:\*|(\w+)(?:-(\w+))?)(?:/([0-9]+))?")


def cron_mistake(schedule: str) -> str | None:
    """What is wrong with a five-field cron schedule (every bad field, at once), or None."""
    quoted = json.dumps(schedule)
    fields = schedule.split()
    if len(fields) != 5:
        return (
            f"{quoted} is not a cron schedule: it needs 5 fields (minute hour "
            f'day-of-month month day-of-week), e.g. "0 9 * * *"'
        )
    mistakes = [
        mistake
        for text, field in zip(fields, CRON_FIELDS, strict=True)
        if (mistake := _field_mistake(text, *field)) is not None
    ]
    return f"{quoted}: {'; '.join(mistakes)}" if mistakes else None


def _field_mistake(
    text: str, label: str, low: int, high: int, names: tuple[str, ...]
) -> str | None:
    for part in text.split(","):
        found = _CRON_PART.fullmatch(part)
        if not found or found[3] == "0":
            return f"{label} {json.dumps(part)} is not valid cron syntax"
        for bound in (found[1], found[2]):
            if bound is None:
                continue
            number = (
                names.index(bound.lower()) + low
                if bound.lower() in names
                else (int(bound) if bound.isdigit() else None)
            )
            if number is None or not low <= number <= high:
                return f"{label} {json.dumps(bound)} is out of range {low}-{high}"
    return None


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
