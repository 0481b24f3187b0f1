"""Housekeeping tests: a catalogue written straight into the skene tables, jobs run
through the real queue protocol at skene's test clock, and skene.housekeep called
as the worker calls it (one short transaction per batch)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from skene_pg.housekeeping import housekeep

D0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC
LIMIT = 3

# free is the default, pro is paid; api_calls is counted per month (one prompt per
# customer and month), seats for life; one freemium loop prompts on api_calls.
CATALOGUE = f"""
INSERT INTO skene.plans (plan, paid, is_default) VALUES ('free', false, true), ('pro', true, false);
INSERT INTO skene.features (feature, period) VALUES ('api_calls', 'month'), ('daily', 'day');
INSERT INTO skene.feature_limits (feature, plan, usage_limit) VALUES
    ('api_calls', 'free', {LIMIT}), ('api_calls', 'pro', NULL),
    ('daily', 'free', NULL), ('daily', 'pro', NULL);
INSERT INTO skene.loops (name, type, feature, config) VALUES
    ('free_tier_limit', 'freemium', 'api_calls',
     '{{"message": "Upgrade to continue.", "attribution_window": "60 days",
        "upgrade_prompt": {{"channel": "email", "template": "upgrade_prompt"}}}}');
"""

# A retention loop as the retention tests write it: no holdout, no quiet hours.
DORMANT = {
    "schedule": "0 9 * * *",
    "dormant_after": "7 days",
    "template": "re_engagement",
    "holdout_percent": 0,
    "quiet_hours": {"start": "00:00", "end": "00:00"},
}


def days(n: float) -> timedelta:
    return timedelta(days=n)


def set_now(conn: psycopg.Connection, at: datetime) -> None:
    conn.execute("SELECT pg_catalog.set_config('skene.now', %s, false)", (at.isoformat(),))


def url_at(db_url: str, at: datetime) -> str:
    """A URL whose sessions read skene's clock at `at` (for workers)."""
    return make_conninfo(db_url, options=f"-c skene.now={at.isoformat()}")


def add_loop(conn: psycopg.Connection, name: str, kind: str, config: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO skene.loops (name, type, config) VALUES (%s, %s, %s)",
        (name, kind, json.dumps(config)),
    )


def keep_finished(conn: psycopg.Connection, interval: str) -> None:
    conn.execute("UPDATE skene.housekeeping_settings SET keep_finished = %s::interval", (interval,))


def enqueue(conn: psycopg.Connection, kind: str = "test", key: str | None = None) -> int:
    row = conn.execute(
        "SELECT skene.enqueue(%s, '{}', NULL, NULL, %s, NULL, 1)", (kind, key)
    ).fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


def finish_due(conn: psycopg.Connection, outcome: str, kinds: list[str] | None = None) -> list[int]:
    """Claim every due job (of `kinds`) and finish it with `outcome`, at the
    connection's clock, through the queue protocol."""
    claimed = conn.execute(
        "SELECT id, lease_token FROM skene.claim_jobs('test-worker', 1000, '30 seconds', %s)",
        (kinds,),
    ).fetchall()
    for job_id, token in claimed:
        conn.execute("SELECT skene.finish_job(%s, %s, %s, 'test')", (job_id, token, outcome))
    return [job_id for job_id, _ in claimed]


def block(conn: psycopg.Connection, customer: str) -> None:
    """Call the gate until the customer is blocked (the first block queues a prompt)."""
    for _ in range(LIMIT + 1):
        conn.execute("SELECT skene.check_and_increment(%s, 'api_calls')", (customer,))


def job_ids(conn: psycopg.Connection) -> set[int]:
    return {row[0] for row in conn.execute("SELECT id FROM skene.jobs")}


def run_housekeeping(conn: psycopg.Connection, **options: Any) -> dict[str, int]:
    result = housekeep(conn, **options)
    assert result.done
    return result.deleted


@pytest.fixture
def catalogue(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute(CATALOGUE)
    set_now(conn, D0)
    return conn


@pytest.fixture
def at(connect: Callable[..., psycopg.Connection]) -> Callable[[datetime], psycopg.Connection]:
    """A new autocommit connection whose skene clock reads `when`."""

    def _at(when: datetime) -> psycopg.Connection:
        c = connect()
        set_now(c, when)
        return c

    return _at
