"""Reactivation after a retention message, and the lift against the holdout."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from skene_pg.email import context as q
from skene_pg.email.handler import skip_reason
from skene_pg.email.outbox import OutboxProvider
from skene_pg.retention.report import lift, retention_rows
from tests.retention.conftest import DORMANT, T0, add_loop, customer, days, send_due, set_now
from tests.worker.conftest import drain


def test_reactivation_and_lift_on_a_constructed_population(
    catalogue: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    conn = catalogue
    # one message per episode: each is measured `window` days after it
    add_loop(conn, "dormant", "retention", {**DORMANT, "holdout_percent": 30, "steps": []})
    ids = [f"c{i:03}" for i in range(200)]
    for cid in ids:
        customer(conn, cid, T0 - days(8))
    conn.execute("SELECT skene.run_loop('dormant')")
    send_due(db_url, T0, tmp_path / "outbox")
    held = {
        c
        for (c,) in conn.execute(
            "SELECT customer_id FROM skene.loop_sends WHERE held_out"
        ).fetchall()
    }
    emailed = set(ids) - held
    assert 30 < len(held) < 90
    # emailed: every other one back within 3 days, every 5th back only after 10 days
    # (too late); held out: every 4th back within 3 days
    back_soon = {c for i, c in enumerate(sorted(emailed)) if i % 2 == 0}
    back_soon |= {c for i, c in enumerate(sorted(held)) if i % 4 == 0}
    back_late = {c for i, c in enumerate(sorted(emailed)) if i % 5 == 1} - back_soon
    for cid in sorted(back_soon):
        conn.execute("SELECT skene.track(%s, 'login', '{}', %s)", (cid, T0 + days(3)))
    # activity from before the message is no comeback
    conn.execute("SELECT skene.track(%s, 'login', '{}', %s)", (sorted(emailed)[1], T0 - days(1)))
    set_now(conn, T0 + days(10))
    for cid in sorted(back_late):
        conn.execute("SELECT skene.track(%s, 'login')", (cid,))

    rows = {arm: row for row in retention_rows(conn, 7) for arm in [row[1]]}
    emailed_back = len(back_soon & emailed)
    held_back = len(back_soon & held)
    assert rows["emailed"][2:4] == (len(emailed), emailed_back)
    assert rows["holdout"][2:4] == (len(held), held_back)
    expected = round(Decimal(emailed_back) / len(emailed), 4) - round(
        Decimal(held_back) / len(held), 4
    )
    assert lift(retention_rows(conn, 7)) == {"dormant": expected}
    # a wider window counts the late ones too, once it has closed
    assert retention_rows(conn, 14)[0][2:] == (0, 0, None, len(emailed))  # all still open
    set_now(conn, T0 + days(14))
    assert retention_rows(conn, 14)[0][3] == emailed_back + len(back_late)
    # back customers no longer wait; the rest still do
    waiting = {
        c
        for (c,) in conn.execute(
            "SELECT customer_id FROM skene.customers WHERE awaiting_reactivation"
        ).fetchall()
    }
    assert waiting == set(ids) - back_soon - back_late


def test_a_message_waiting_in_quiet_hours_is_skipped_when_the_customer_comes_back(
    catalogue: psycopg.Connection,
) -> None:
    conn = catalogue
    add_loop(
        conn, "dormant", "retention", {**DORMANT, "quiet_hours": {"start": "08:00", "end": "12:00"}}
    )
    customer(conn, "ada", T0 - days(8))
    conn.execute("SELECT skene.run_loop('dormant')")  # 09:00 UTC: deferred to 12:00
    set_now(conn, T0 + days(0.05))
    conn.execute("SELECT skene.track('ada', 'login')")
    assert conn.execute("SELECT state, last_error FROM skene.jobs").fetchone() == (
        "skipped",
        "the customer was active again at 2026-01-20 10:12:00+00",
    )


def test_a_sequence_is_measured_when_it_could_have_run_and_later_steps_count(
    catalogue: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    """Steps at 7, 14 and 30 days of dormancy. ada: step 0 on day 0, step 1 on day 6,
    back on day 9 (3 days after her second message: reactivated). bob never comes back
    and gets step 2 on day 22. Both are measured from day 30 (day 0 + 23 days of steps
    + the 7-day window), not ada first because she got fewer messages."""
    conn = catalogue
    add_loop(conn, "dormant", "retention", DORMANT)
    customer(conn, "ada", T0 - days(8))
    customer(conn, "bob", T0 - days(8))
    for day in (0, 6, 9, 13, 22, 29, 30):
        set_now(conn, T0 + days(day))
        if day == 9:
            conn.execute("SELECT skene.track('ada', 'login')")
        conn.execute("SELECT skene.run_loop('dormant')")
        send_due(db_url, T0 + days(day), tmp_path / "outbox")
        open_episodes = 2 if day < 22 else 3  # day 22: ada dormant again, a new episode
        if day < 30:
            assert retention_rows(conn, 7) == [("dormant", "emailed", 0, 0, None, open_episodes)], (
                day
            )
    assert retention_rows(conn, 7) == [("dormant", "emailed", 2, 1, Decimal("0.5"), 1)]
    assert conn.execute(
        "SELECT customer_id, episode_start > %s, count(*) FROM skene.loop_sends "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        (T0,),
    ).fetchall() == [("ada", False, 2), ("ada", True, 2), ("bob", False, 3)]


def test_a_message_goes_out_although_activity_has_finer_precision_than_its_payload(
    catalogue: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    """The payload's episode_start keeps whole seconds; the episode's own start
    (with microseconds) is not activity after it."""
    conn = catalogue
    add_loop(conn, "dormant", "retention", DORMANT)
    customer(conn, "ada", T0 - days(8) + timedelta(microseconds=123456))
    conn.execute("SELECT skene.run_loop('dormant')")
    outbox = tmp_path / "outbox"
    drain(make_conninfo(db_url, options=f"-c skene.now={T0.isoformat()}"), OutboxProvider(outbox))
    assert conn.execute("SELECT state, last_error FROM skene.jobs").fetchone() == (
        "succeeded",
        None,
    )
    assert len(list(outbox.iterdir())) == 1


def test_activity_that_raced_the_run_skips_the_message_at_send_time(
    catalogue: psycopg.Connection,
) -> None:
    """A customer active while the run scanned is queued anyway (the run's snapshot);
    the worker's check at send time sees the activity and skips the message."""
    conn = catalogue
    add_loop(conn, "dormant", "retention", DORMANT)
    customer(conn, "ada", T0 - days(8))
    conn.execute("SELECT skene.run_loop('dormant')")
    # what such a race leaves: newer activity, the job still waiting
    conn.execute(
        "UPDATE skene.customers SET last_activity_at = %s WHERE customer_id = 'ada'",
        (T0 + days(0.5),),
    )
    (job_id, payload) = conn.execute("SELECT id, payload FROM skene.jobs").fetchone()  # type: ignore[misc]
    context = q.email_contexts(conn, [job_id])[job_id]
    assert skip_reason(context, payload, "ada") == (
        "the customer was active again at 2026-01-20 21:00:00+0000"
    )
    # activity before the episode started is no reason
    context["last_activity_at"] = T0 - days(8)
    assert skip_reason(context, payload, "ada") is None
