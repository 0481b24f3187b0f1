"""Quiet hours for customers without a time zone: UTC, unless the loop names a
`quiet_hours.default_timezone`, which apply (and the database) check against the zones
PostgreSQL knows."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from skene_pg.config import ApplyRefused, ConfigError, apply_config, load_config
from tests.retention.conftest import DORMANT, add_loop, customer, days, set_now
from tests.worker.conftest import cli_env, skene_pg

LATE = datetime.fromisoformat("2026-01-20T22:40:00+00:00")  # 17:40 in New York
NEW_YORK = {"start": "21:00", "end": "08:00", "default_timezone": "America/New_York"}

CONFIG = """\
default_plan = "free"
[plans.free]
[features.api_calls]
period = "month"
limits = { free = 100 }

[[loops]]
name = "dormant_users"
type = "retention"
schedule = "0 9 * * *"
dormant_after = "7 days"
template = "re_engagement"
quiet_hours = { start = "21:00", end = "08:00", default_timezone = ZONE }
"""


def run_at(conn: psycopg.Connection) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT customer_id, to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') "
            "FROM skene.jobs"
        ).fetchall()
    )


def test_customers_without_a_time_zone_use_the_loops_default(
    catalogue: psycopg.Connection,
) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", {**DORMANT, "quiet_hours": NEW_YORK})
    set_now(conn, LATE)
    customer(conn, "none", LATE - days(8))  # 17:40 in New York: goes out now
    customer(conn, "utc", LATE - days(8), timezone="UTC")  # their own zone wins
    customer(conn, "tokyo", LATE - days(8), timezone="Asia/Tokyo")  # 07:40 there
    conn.execute("SELECT skene.run_loop('dormant')")
    assert run_at(conn) == {
        "none": "2026-01-20 22:40",
        "utc": "2026-01-21 08:00",
        "tokyo": "2026-01-20 23:00",
    }
    # at send time too: at 03:00 UTC it is 22:00 in New York, quiet until 08:00 there
    set_now(conn, datetime.fromisoformat("2026-01-21T03:00:00+00:00"))
    assert conn.execute(
        "SELECT c.customer_id, to_char(a.send_after AT TIME ZONE 'UTC', 'HH24:MI') "
        "  FROM skene.retention_send_after(ARRAY(SELECT id FROM skene.jobs)) a "
        "  JOIN skene.jobs c ON c.id = a.job_id ORDER BY 1"
    ).fetchall() == [("none", "13:00"), ("tokyo", "03:00"), ("utc", "08:00")]


def test_without_a_default_customers_without_a_time_zone_are_on_utc(
    catalogue: psycopg.Connection,
) -> None:
    """What the docs warn about: a run at 22:40 UTC defers them to 08:00 UTC."""
    conn = catalogue
    quiet = {"start": "21:00", "end": "08:00"}
    add_loop(conn, "dormant", "retention", {**DORMANT, "quiet_hours": quiet})
    set_now(conn, LATE)
    customer(conn, "none", LATE - days(8))
    conn.execute("SELECT skene.run_loop('dormant')")
    assert run_at(conn) == {"none": "2026-01-21 08:00"}


def test_the_database_refuses_a_default_time_zone_it_does_not_know(
    catalogue: psycopg.Connection,
) -> None:
    with pytest.raises(errors.InvalidParameterValue) as caught:
        add_loop(
            catalogue,
            "dormant",
            "retention",
            {**DORMANT, "quiet_hours": {**NEW_YORK, "default_timezone": "America/NewYork"}},
        )
    assert caught.value.diag.message_primary == (
        "skene: unknown time zone 'America/NewYork' in quiet_hours.default_timezone of loop dormant"
    )
    assert "pg_timezone_names" in (caught.value.diag.message_hint or "")


def test_a_default_time_zone_must_be_a_name(tmp_path: Path) -> None:
    path = tmp_path / "skene.toml"
    path.write_text(CONFIG.replace("ZONE", "5"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (13, "loops[0].quiet_hours.default_timezone")
    assert problem.message == 'must be a time zone name such as "America/New_York", got 5'


def test_apply_checks_the_default_time_zone_against_postgresql(
    conn: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "skene.toml"
    path.write_text(CONFIG.replace("ZONE", '"America/NewYork"'))
    config = load_config(path)  # the file alone is fine: a name
    with pytest.raises(ApplyRefused) as caught:
        apply_config(conn, config)
    assert str(caught.value) == (
        f'{path}:13: loops[0].quiet_hours.default_timezone: "America/NewYork" is not a '
        'time zone PostgreSQL knows; did you mean "America/New_York"? use a name from '
        'pg_timezone_names, such as "America/New_York"\nnothing applied'
    )
    assert conn.execute("SELECT count(*) FROM skene.plans").fetchone() == (0,)
    result = skene_pg("apply", str(path), env=cli_env(SKENE_DATABASE_URL=db_url))
    assert result.returncode == 1
    assert f"{path}:13: loops[0].quiet_hours.default_timezone:" in result.stderr

    path.write_text(CONFIG.replace("ZONE", '"America/New_York"'))
    apply_config(conn, load_config(path))
    assert conn.execute(
        "SELECT config -> 'quiet_hours' ->> 'default_timezone' FROM skene.loops"
    ).fetchone() == ("America/New_York",)
