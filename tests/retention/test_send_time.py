"""A retention message's sent_at is when it really went out, not when the run queued
it (quiet hours hold it back): reactivation is measured from then, for held-out twins
from when their message would have gone out. A quiet-hours deferral uses up no
attempt."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from skene_pg.email.base import Email, TransientEmailError
from skene_pg.retention.report import retention_rows
from tests.retention.conftest import DORMANT, T0, add_loop, customer, days, send_due, set_now
from tests.worker.conftest import drain

QUIET = {**DORMANT, "steps": [], "quiet_hours": {"start": "08:00", "end": "12:00"}}  # UTC here


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def sends(conn: psycopg.Connection) -> dict[str, tuple]:
    """customer -> (queued_at, sent_at, reactivated_at)."""
    rows = conn.execute(
        "SELECT customer_id, queued_at, sent_at, reactivated_at FROM skene.loop_sends"
    ).fetchall()
    return {customer_id: tuple(rest) for customer_id, *rest in rows}


def test_sent_at_is_the_real_send_time_and_reactivation_is_measured_from_it(
    catalogue: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", QUIET)
    customer(conn, "ada", T0 - days(8))
    customer(conn, "bob", T0 - days(8))
    conn.execute("SELECT skene.run_loop('dormant')")  # 09:00: held back until 12:00
    assert sends(conn) == {"ada": (T0, None, None), "bob": (T0, None, None)}
    # waiting to go out: open, not measured
    assert retention_rows(conn, 7) == [("dormant", "emailed", 0, 0, None, 2)]

    sent = T0 + hours(3.5)  # the worker gets to them at 12:30
    send_due(db_url, sent, tmp_path / "outbox")
    assert sends(conn) == {"ada": (T0, sent, None), "bob": (T0, sent, None)}
    assert len(list((tmp_path / "outbox").iterdir())) == 2

    # ada's app reports, at 13:00, activity from 10:30: after the run queued her
    # message, before it went out. It is not a comeback after that message.
    set_now(conn, T0 + hours(4))
    conn.execute("SELECT skene.track('ada', 'login', '{}', %s)", (T0 + hours(1.5),))
    assert sends(conn)["ada"] == (T0, sent, None)
    assert conn.execute(
        "SELECT awaiting_reactivation FROM skene.customers WHERE customer_id = 'ada'"
    ).fetchone() == (True,)

    # bob is back 6 days 23.5 hours after his message went out (7 days and 3 hours
    # after it was queued): within a 7-day window of the send
    back = sent + days(7) - hours(0.5)
    set_now(conn, back)
    conn.execute("SELECT skene.track('bob', 'login')")
    assert sends(conn)["bob"] == (T0, sent, back)
    # 7 days after queueing, but not yet after sending: still open
    assert retention_rows(conn, 7) == [("dormant", "emailed", 0, 0, None, 2)]
    set_now(conn, sent + days(7))
    assert retention_rows(conn, 7) == [("dormant", "emailed", 2, 1, Decimal("0.5"), 0)]


def test_a_held_out_twin_counts_from_when_its_message_would_have_gone_out(
    catalogue: psycopg.Connection,
) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", {**QUIET, "holdout_percent": 100})
    customer(conn, "early", T0 - days(8))
    customer(conn, "later", T0 - days(8))
    conn.execute("SELECT skene.run_loop('dormant')")
    noon = T0 + hours(3)
    assert sends(conn) == {"early": (T0, noon, None), "later": (T0, noon, None)}
    # back at 10:00: its message would still have been waiting, and would have been
    # skipped, so the twin never "went out" and is not measured at all
    set_now(conn, T0 + hours(1))
    conn.execute("SELECT skene.track('early', 'login')")
    set_now(conn, T0 + hours(5))
    conn.execute("SELECT skene.track('later', 'login')")
    assert sends(conn) == {"early": (T0, None, None), "later": (T0, noon, T0 + hours(5))}
    assert conn.execute(
        "SELECT customer_id, awaiting_reactivation FROM skene.customers ORDER BY 1"
    ).fetchall() == [("early", False), ("later", False)]
    set_now(conn, noon + days(7))
    assert retention_rows(conn, 7) == [("dormant", "holdout", 1, 1, Decimal(1), 0)]


class _Down:
    """A provider whose every send fails (transient), counting the calls."""

    name = "down"

    def __init__(self) -> None:
        self.calls = 0

    def send(self, email: Email) -> str | None:
        self.calls += 1
        raise TransientEmailError("provider down")

    def close(self) -> None:
        pass


def test_a_quiet_hours_deferral_is_no_attempt(catalogue: psycopg.Connection, db_url: str) -> None:
    """No retries (max_attempts 1): deferred once by quiet hours, the job still has
    its one attempt, and dies after exactly that one failure."""
    conn = catalogue
    add_loop(conn, "dormant", "retention", {**QUIET, "recovery": {"retries": 0}})
    customer(conn, "ada", T0 - days(8))
    conn.execute("SELECT skene.run_loop('dormant')")
    # what a retry or a rate-limit deferral landing in quiet hours looks like
    conn.execute("UPDATE skene.jobs SET run_at = %s", (T0 + hours(0.5),))
    down = _Down()
    at = T0 + hours(0.5)
    drain(make_conninfo(db_url, options=f"-c skene.now={at.isoformat()}"), down)
    assert conn.execute(
        "SELECT state, attempt, deferrals, max_attempts FROM skene.jobs"
    ).fetchone() == (
        "available",
        0,
        1,
        1,
    )
    assert down.calls == 0
    at = T0 + hours(3.5)
    drain(make_conninfo(db_url, options=f"-c skene.now={at.isoformat()}"), down)
    assert down.calls == 1
    assert conn.execute(
        "SELECT state, attempt, deferrals, last_error FROM skene.jobs"
    ).fetchone() == (
        "dead",
        1,
        1,
        "gave up after 1 failed attempt(s): provider down",
    )
    assert sends(conn)["ada"] == (T0, None, None)  # never went out
