"""A retention loop's slot runs once: running it again, by hand or by a second
scheduler that waited for the first, returns the first run and queues nothing more,
even when more customers are due by then."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.retention.conftest import DORMANT, T0, add_loop, customer, days, jobs, set_now
from tests.worker.conftest import wait_for


def run_loop(conn: psycopg.Connection, slot: datetime) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM skene.run_loop('dormant', %s)", (slot,))
        row = cur.fetchone()
    assert row is not None
    return row


def runs(conn: psycopg.Connection) -> list[tuple[int, datetime]]:
    return conn.execute(
        "SELECT id, slot FROM skene.loop_runs WHERE loop_name = 'dormant' ORDER BY id"
    ).fetchall()


def test_a_slot_run_again_returns_its_first_run_and_queues_nothing_more(
    catalogue: psycopg.Connection,
) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", DORMANT)
    customer(conn, "ada", T0 - days(8))  # dormant: step 0 is due
    first = run_loop(conn, T0)
    assert (first["state"], first["slot"]) == ("succeeded", T0)
    assert (first["candidates"], first["queued"], first["held_out"]) == (1, 1, 0)
    assert [c for c, _, _ in jobs(conn, "dormant")] == ["ada"]

    # later, someone else is due too; the slot of T0 has run, so it must not take them
    customer(conn, "bob", T0 - days(9))
    set_now(conn, T0 + timedelta(minutes=30))
    again = run_loop(conn, T0)
    assert again == first, "the slot ran a second time"  # same id, counts, times
    assert runs(conn) == [(first["id"], T0)]
    assert [c for c, _, _ in jobs(conn, "dormant")] == ["ada"]
    assert conn.execute(
        "SELECT customer_id, run_id FROM skene.loop_sends WHERE loop_name = 'dormant'"
    ).fetchall() == [("ada", first["id"])]

    # the next slot is a run of its own, and it does reach bob: the repeat had work to do
    following = run_loop(conn, T0 + timedelta(minutes=1))
    assert following["id"] != first["id"] and following["queued"] == 1
    assert sorted(c for c, _, _ in jobs(conn, "dormant")) == ["ada", "bob"]


def test_a_second_scheduler_waits_for_the_slots_run_and_returns_it(
    catalogue: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    at: Callable[[datetime], psycopg.Connection],
) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", DORMANT)
    customer(conn, "ada", T0 - days(8))

    one = connect(autocommit=False)
    set_now(one, T0)
    first = run_loop(one, T0)  # not committed yet: the slot's row is held
    assert first["queued"] == 1

    two = at(T0 + timedelta(minutes=30))
    two_pid = two.info.backend_pid
    result: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def second_scheduler() -> None:
        try:
            result.append(run_loop(two, T0))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=second_scheduler, daemon=True)
    thread.start()
    wait_for(
        lambda: (
            conn.execute(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (two_pid,)
            ).fetchone()
            == (True,)
        ),
        what="the second run to wait for the first",
    )
    customer(conn, "bob", T0 - days(9))  # due by the time the second run goes on
    one.commit()
    thread.join(30)
    assert not thread.is_alive(), "the second run never returned"
    assert errors == []
    assert result == [first], "the second scheduler ran the slot again"
    assert runs(conn) == [(first["id"], T0)]
    assert [c for c, _, _ in jobs(conn, "dormant")] == ["ada"]
