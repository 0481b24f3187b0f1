"""Retention tests: a catalogue written straight into the skene tables, customers
with backdated activity, and skene's clock moved with `SET skene.now`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from skene_pg.email.outbox import OutboxProvider
from tests.worker.conftest import drain

T0 = datetime(2026, 1, 20, 9, 0, tzinfo=UTC)  # a Tuesday, 09:00 UTC

CATALOGUE = """
INSERT INTO skene.plans (plan, paid, is_default) VALUES ('free', false, true), ('pro', true, false);
INSERT INTO skene.features (feature, period) VALUES ('api_calls', 'lifetime'), ('monthly', 'month');
INSERT INTO skene.feature_limits (feature, plan, usage_limit) VALUES
    ('api_calls', 'free', NULL), ('monthly', 'free', NULL);
"""

DORMANT = {
    "schedule": "0 9 * * *",
    "dormant_after": "7 days",
    "template": "re_engagement",
    "steps": [
        {"after": "14 days", "template": "re_engagement"},
        {"after": "30 days", "template": "re_engagement"},
    ],
    "holdout_percent": 0,
    # no quiet window unless a test asks for one
    "quiet_hours": {"start": "00:00", "end": "00:00"},
}


def set_now(conn: psycopg.Connection, at: datetime) -> None:
    conn.execute("SELECT pg_catalog.set_config('skene.now', %s, false)", (at.isoformat(),))


def add_loop(
    conn: psycopg.Connection,
    name: str,
    kind: str,
    config: dict[str, Any],
    feature: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO skene.loops (name, type, feature, config) VALUES (%s, %s, %s, %s)",
        (name, kind, feature, json.dumps(config)),
    )


def customer(
    conn: psycopg.Connection,
    customer_id: str,
    last_active: datetime | None,
    *,
    email: bool = True,
    timezone: str | None = None,
) -> None:
    conn.execute(
        "SELECT skene.identify(%s, email => %s, timezone => %s)",
        (customer_id, f"{customer_id}@example.com" if email else None, timezone),
    )
    if last_active is not None:
        conn.execute("SELECT skene.track(%s, 'login', '{}', %s)", (customer_id, last_active))


def days(n: float) -> timedelta:
    return timedelta(days=n)


@pytest.fixture
def catalogue(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute(CATALOGUE)
    set_now(conn, T0)
    return conn


@pytest.fixture
def at(connect: Callable[..., psycopg.Connection]) -> Callable[[datetime], psycopg.Connection]:
    """A new connection whose skene clock reads `when`."""

    def _at(when: datetime) -> psycopg.Connection:
        c = connect()
        set_now(c, when)
        return c

    return _at


def jobs(conn: psycopg.Connection, loop: str) -> list[tuple[str, int, str]]:
    """(customer, step, episode_start) of every job a loop queued."""
    return conn.execute(
        "SELECT customer_id, (payload ->> 'step')::int, payload ->> 'episode_start' "
        "FROM skene.jobs WHERE loop_name = %s ORDER BY customer_id, id",
        (loop,),
    ).fetchall()


def send_due(db_url: str, when: datetime, outbox: Path) -> None:
    """Run the worker once with skene's clock at `when`: every email due then goes out
    (into the outbox folder), and a retention message's sent_at is `when`."""
    drain(make_conninfo(db_url, options=f"-c skene.now={when.isoformat()}"), OutboxProvider(outbox))
