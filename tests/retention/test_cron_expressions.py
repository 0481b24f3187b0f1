"""The worker's cron evaluator reads every schedule `skene-pg apply` accepts: month and
day names as well as numbers (pg_cron's syntax, in UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from skene_pg.retention.cron import Schedule, cron_mistake

MONDAY = datetime(2026, 1, 19, 9, 0, tzinfo=UTC)
SATURDAY = datetime(2026, 1, 24, 9, 0, tzinfo=UTC)


def fires_at(schedule: str, when: datetime) -> bool:
    return Schedule(schedule).latest(when) == when


def test_day_names_fire_on_weekdays_only() -> None:
    assert fires_at("0 9 * * mon-fri", MONDAY)
    assert not fires_at("0 9 * * mon-fri", SATURDAY)
    assert Schedule("0 9 * * mon-fri").latest(SATURDAY) == datetime(
        2026, 1, 23, 9, 0, tzinfo=UTC
    )  # the Friday before
    assert Schedule("0 9 * * MON-FRI").weekdays == {1, 2, 3, 4, 5}  # any case
    assert Schedule("0 9 * * sat,sun").weekdays == {0, 6}
    assert Schedule("0 9 * * 7").weekdays == {0}  # 7 is Sunday too


def test_month_names() -> None:
    jan_first = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    assert fires_at("0 9 1 jan *", jan_first)
    assert Schedule("0 9 1 jan *").latest(datetime(2026, 3, 5, tzinfo=UTC)) == jan_first
    assert Schedule("0 9 1 Jan-Mar/2 *").months == {1, 3}


@pytest.mark.parametrize(
    "schedule",
    ["0 9 * * mon-fri", "0 9 1 jan *", "*/15 8-18 * feb,dec sun", "0 0 1-7 * 1", "5/10 * * * *"],
)
def test_what_the_validator_accepts_evaluates(schedule: str) -> None:
    assert cron_mistake(schedule) is None
    Schedule(schedule)  # does not raise


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError):
        Schedule("0 9 * * monday")
    with pytest.raises(ValueError):
        Schedule("0 9 * mon *")  # a day name in the month field
