"""skene.housekeep: finished work older than keep_finished goes, in bounded batches
that never wait for anyone; recent and unfinished work stays."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import psycopg
import pytest

from skene_pg.housekeeping import housekeep
from tests.housekeeping.conftest import (
    D0,
    DORMANT,
    add_loop,
    days,
    enqueue,
    finish_due,
    job_ids,
    keep_finished,
    run_housekeeping,
    set_now,
)

pytestmark = pytest.mark.usefixtures("catalogue")


def stripe_event(event_id: str, kind: str, customer: str | None = None) -> str:
    return json.dumps({"id": event_id, "type": kind, "data": {"object": {"customer": customer}}})


def ingest(conn: psycopg.Connection, event_id: str, kind: str, customer: str | None) -> None:
    conn.execute(
        "SELECT skene.ingest_billing_event('stripe', %s::jsonb)",
        (stripe_event(event_id, kind, customer),),
    )


def events(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT event_id FROM skene.billing_events ORDER BY 1")]


def keys(conn: psycopg.Connection) -> list[str]:
    return [
        r[0] for r in conn.execute("SELECT idempotency_key FROM skene.idempotency_keys ORDER BY 1")
    ]


def test_old_finished_work_goes_and_everything_else_stays(conn: psycopg.Connection) -> None:
    # At D0: one job ends in each finished state, one waits for a far run_at, one is
    # left running; processed and unprocessed billing events; a key of a daily feature.
    old = {}
    for state in ("succeeded", "skipped", "dead"):
        enqueue(conn, kind=f"old_{state}")
        (old[state],) = finish_due(conn, state, [f"old_{state}"])
    old["cancelled"] = enqueue(conn, kind="old_cancelled")
    conn.execute("SELECT skene.cancel_job(%s)", (old["cancelled"],))
    waiting = conn.execute(
        "SELECT skene.enqueue('later', '{}', NULL, NULL, NULL, %s)", (D0 + days(90),)
    ).fetchone()[0]
    running = enqueue(conn, kind="old_running")
    conn.execute("SELECT skene.claim_jobs('w', 1, '1 hour', ARRAY['old_running'])")
    ingest(conn, "evt_ignored", "customer.created", None)  # processed at once
    ingest(conn, "evt_no_customer", "invoice.paid", None)  # processed at once
    ingest(conn, "evt_pending", "invoice.paid", "cus_X")  # its sync job still waits
    conn.execute("SELECT skene.check_and_increment('ada', 'daily', 1, 'k_old')")
    attempts_before = conn.execute("SELECT count(*) FROM skene.job_attempts").fetchone()[0]

    # 30 days later (the default keep_finished) and one minute: the same again, recent
    set_now(conn, D0 + days(30) + days(1 / 1440))
    recent = enqueue(conn, kind="recent")
    finish_due(conn, "succeeded", ["recent"])
    ingest(conn, "evt_recent", "customer.created", None)
    conn.execute("SELECT skene.check_and_increment('ada', 'daily', 1, 'k_today')")

    deleted = run_housekeeping(conn)
    assert deleted == {
        "jobs": 4,
        "job_attempts": 3,  # the cancelled job never ran
        "billing_events": 2,
        "loop_sends.run_id": 0,
        "loop_runs": 0,
        "idempotency_keys": 1,
    }
    pending_sync = conn.execute("SELECT id FROM skene.jobs WHERE kind = 'stripe_sync'").fetchone()
    assert job_ids(conn) == {waiting, running, recent, pending_sync[0]}
    assert not job_ids(conn) & set(old.values())
    assert conn.execute("SELECT count(*) FROM skene.job_attempts").fetchone()[0] == (
        attempts_before - 3 + 1  # the recent job's attempt
    )
    assert events(conn) == ["evt_pending", "evt_recent"]
    assert keys(conn) == ["k_today"]
    # nothing is left to do: a second run deletes nothing
    assert set(run_housekeeping(conn).values()) == {0}


def test_keep_finished_is_read_from_the_settings(conn: psycopg.Connection) -> None:
    keep_finished(conn, "7 days")
    first = enqueue(conn)
    finish_due(conn, "succeeded")
    set_now(conn, D0 + days(6))
    assert run_housekeeping(conn)["jobs"] == 0
    assert job_ids(conn) == {first}
    set_now(conn, D0 + days(7))  # finished exactly keep_finished ago
    assert run_housekeeping(conn)["jobs"] == 1
    assert job_ids(conn) == set()


def test_each_call_deletes_one_bounded_batch_per_table(conn: psycopg.Connection) -> None:
    conn.execute(
        "SELECT skene.enqueue('bulk', '{}', NULL, NULL, 'bulk:' || n, NULL, 1) "
        "FROM generate_series(1, 25) n"
    )
    assert len(finish_due(conn, "succeeded")) == 25
    set_now(conn, D0 + days(31))
    counts = [
        dict(conn.execute("SELECT * FROM skene.housekeep(10)").fetchall())["jobs"] for _ in range(4)
    ]
    assert counts == [10, 10, 5, 0]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="batch_size must be at least 1"):
        conn.execute("SELECT * FROM skene.housekeep(0)")


def test_a_run_repeats_batches_until_done_or_out_of_time(conn: psycopg.Connection) -> None:
    conn.execute(
        "SELECT skene.enqueue('bulk', '{}', NULL, NULL, 'bulk:' || n, NULL, 1) "
        "FROM generate_series(1, 25) n"
    )
    finish_due(conn, "succeeded")
    set_now(conn, D0 + days(31))
    out_of_time = housekeep(conn, batch_size=10, budget=0)
    assert (out_of_time.done, out_of_time.deleted["jobs"]) == (False, 10)
    rest = housekeep(conn, batch_size=10)
    assert (rest.done, rest.deleted["jobs"], rest.deleted["job_attempts"]) == (True, 15, 15)
    assert job_ids(conn) == set()


def test_a_batch_skips_rows_others_hold_and_never_waits(
    conn: psycopg.Connection, at: Callable[[datetime], psycopg.Connection]
) -> None:
    held, free = enqueue(conn, key="held"), enqueue(conn, key="free")
    finish_due(conn, "dead")
    conn.execute("SELECT skene.check_and_increment('ada', 'daily', 1, 'k_held')")
    conn.execute("SELECT skene.check_and_increment('ada', 'daily', 1, 'k_free')")
    later = D0 + days(31)
    # an operator retrying the dead job, and a gate call reusing an expired key, both
    # inside transactions that have not committed yet
    operator = at(later)
    operator.execute("BEGIN")
    operator.execute("SELECT skene.retry_job(%s)", (held,))
    app = at(later)
    app.execute("BEGIN")
    app.execute("SELECT skene.check_and_increment('ada', 'daily', 1, 'k_held')")

    housekeeper = at(later)
    housekeeper.execute("SET lock_timeout = '2s'")  # waiting would fail the call
    deleted = run_housekeeping(housekeeper)
    assert (deleted["jobs"], deleted["idempotency_keys"]) == (1, 1)
    assert job_ids(conn) == {held}
    assert free not in job_ids(conn)
    operator.execute("COMMIT")
    app.execute("COMMIT")
    assert conn.execute("SELECT state FROM skene.jobs WHERE id = %s", (held,)).fetchone() == (
        "available",
    )
    assert keys(conn) == ["k_held"]


def test_old_loop_runs_go_but_each_loops_newest_stays(conn: psycopg.Connection) -> None:
    add_loop(conn, "dormant", "retention", DORMANT)
    add_loop(conn, "weekly", "retention", {**DORMANT, "schedule": "0 9 * * mon"})
    conn.execute("SELECT skene.identify('ada', 'ada@example.com')")
    conn.execute("SELECT skene.track('ada', 'login', '{}', %s)", (D0 - days(8),))
    slots = [D0 + days(n) for n in range(40)]
    for slot in slots:
        set_now(conn, slot)
        conn.execute("SELECT skene.run_loop('dormant', %s)", (slot,))
    set_now(conn, D0)
    conn.execute("SELECT skene.run_loop('weekly', %s)", (D0,))  # its only (so newest) run
    first = conn.execute(
        "SELECT id, queued FROM skene.loop_runs WHERE loop_name = 'dormant' AND slot = %s", (D0,)
    ).fetchone()
    assert first[1] == 1  # ada's message: its send points at this run

    set_now(conn, slots[-1] + days(1 / 1440))  # 30-day cutoff: the first 10 slots are old
    deleted = run_housekeeping(conn)
    assert (deleted["loop_runs"], deleted["loop_sends.run_id"]) == (10, 1)
    left = conn.execute(
        "SELECT loop_name, min(slot), count(*) FROM skene.loop_runs GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert left == [("dormant", slots[10], 30), ("weekly", D0, 1)]
    assert conn.execute("SELECT run_id FROM skene.loop_sends").fetchall() == [(None,)]
    assert conn.execute(
        "SELECT loop_name, runs, failed, queued, held_out FROM skene.loop_run_totals"
    ).fetchall() == [("dormant", 10, 0, 1, 0)]
