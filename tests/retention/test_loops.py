"""Retention loops in SQL and on the worker's schedule: one message per episode and
step however often the loop runs, who gets none, quiet hours, the cap, segments."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from skene_pg.email.outbox import OutboxProvider
from skene_pg.retention.schedules import run_due
from tests.retention.conftest import DORMANT, T0, add_loop, customer, days, jobs, set_now
from tests.worker.conftest import drain


def test_one_message_per_episode_and_step_with_three_workers_running_the_schedule(
    catalogue: psycopg.Connection, at: Callable[[datetime], psycopg.Connection]
) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", DORMANT)
    customer(conn, "fresh", T0 - days(1))  # dormant on day 6, then steps at 13 and 29
    customer(conn, "week", T0 - days(8))  # step 0 now, 14d on day 6, 30d on day 22
    customer(conn, "old", T0 - days(31))  # found late: only the latest step (30d)
    workers = [at(T0) for _ in range(3)]
    for day in range(0, 32):
        now = T0 + days(day)
        for w in workers:
            set_now(w, now)
        # every poll of every worker in the day: three workers, each polling 3 times
        threads = [
            threading.Thread(target=lambda w=w, now=now: [run_due(w, now) for _ in range(3)])
            for w in workers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    sent = jobs(conn, "dormant")
    assert Counter((c, s) for c, s, _ in sent) == {
        ("fresh", 0): 1,
        ("fresh", 1): 1,
        ("fresh", 2): 1,
        ("week", 0): 1,
        ("week", 1): 1,
        ("week", 2): 1,
        ("old", 2): 1,
    }
    # one run per daily slot, whoever ran it
    runs = conn.execute(
        "SELECT count(*), count(DISTINCT slot) FROM skene.loop_runs WHERE loop_name = 'dormant'"
    ).fetchone()
    assert runs == (32, 32)
    # the same slot again, by hand: nothing new
    set_now(conn, T0 + days(31))
    conn.execute("SELECT skene.run_loop('dormant', %s)", (T0 + days(31),))
    # a slot still to come is not the worker's (or anyone's) to take
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is in the future"):
        conn.execute("SELECT skene.run_loop('dormant', %s)", (T0 + days(32),))
    assert len(jobs(conn, "dormant")) == 7


def test_active_again_starts_a_new_episode(catalogue: psycopg.Connection) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", DORMANT)
    customer(conn, "ada", T0 - days(8))
    conn.execute("SELECT skene.run_loop('dormant')")
    for _ in range(3):  # however often it runs, in other slots too
        set_now(conn, T0 + days(0.5))
        conn.execute("SELECT skene.run_loop('dormant')")
    assert [s for _, s, _ in jobs(conn, "dormant")] == [0]
    set_now(conn, T0 + days(1))
    conn.execute("SELECT skene.track('ada', 'login')")  # back: the episode ends
    set_now(conn, T0 + days(5))
    conn.execute("SELECT skene.run_loop('dormant')")  # active 4 days ago: not dormant
    assert len(jobs(conn, "dormant")) == 1
    set_now(conn, T0 + days(8.5))
    conn.execute("SELECT skene.run_loop('dormant')")  # dormant again: a new episode
    sent = jobs(conn, "dormant")
    assert [(s, e) for _, s, e in sent] == [
        (0, "2026-01-12T09:00:00Z"),
        (0, "2026-01-21T09:00:00Z"),
    ]


def test_active_unsubscribed_suppressed_held_out_and_unreachable_get_none(
    catalogue: psycopg.Connection,
) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", {**DORMANT, "holdout_percent": 50})
    ids = [f"c{i}" for i in range(40)]
    for cid in ids:
        customer(conn, cid, T0 - days(10))
    customer(conn, "active", T0 - days(2))
    customer(conn, "unsub", T0 - days(10))
    conn.execute("SELECT skene.unsubscribe('unsub')")
    customer(conn, "bounced", T0 - days(10))
    conn.execute("SELECT skene.suppress('BOUNCED@example.com ', 'bounce')")
    customer(conn, "no_email", T0 - days(10), email=False)
    customer(conn, "never_tracked", None)
    run = conn.execute("SELECT state, queued, held_out FROM skene.run_loop('dormant')").fetchone()
    buckets = dict(
        conn.execute(
            "SELECT c, skene.holdout_bucket(c, 'dormant') FROM unnest(%s::text[]) c", (ids,)
        ).fetchall()
    )
    held = {c for c in ids if buckets[c] < 50}
    assert 5 < len(held) < 35  # the hash splits them
    emailed = {c for c, _, _ in jobs(conn, "dormant")}
    assert emailed == set(ids) - held
    assert run == ("succeeded", len(ids) - len(held), len(held))
    recorded = dict(
        conn.execute(
            "SELECT customer_id, held_out FROM skene.loop_sends WHERE job_id IS NULL"
        ).fetchall()
    )
    assert recorded == dict.fromkeys(held, True)
    # the bucket is md5 of "loop:customer", the same in any client
    assert buckets == {
        c: int(hashlib.md5(f"dormant:{c}".encode()).hexdigest()[:8], 16) % 100 for c in ids
    }
    # deterministic: back, dormant again, and the same customers are held out
    for cid in ids:
        conn.execute("SELECT skene.track(%s, 'login', '{}', %s)", (cid, T0 + days(1)))
    set_now(conn, T0 + days(9))
    conn.execute("SELECT skene.run_loop('dormant')")
    again = conn.execute(
        "SELECT customer_id FROM skene.loop_sends "
        "WHERE held_out AND sent_at = %s AND customer_id = ANY(%s)",
        (T0 + days(9), ids),
    ).fetchall()
    assert {c for (c,) in again} == held


def test_quiet_hours_defer_in_the_customers_time_zone(catalogue: psycopg.Connection) -> None:
    conn = catalogue
    quiet = {**DORMANT, "quiet_hours": {"start": "21:00", "end": "08:00"}}
    add_loop(conn, "dormant", "retention", quiet)
    now = datetime.fromisoformat("2026-01-20T03:00:00+00:00")
    set_now(conn, now)
    customer(conn, "ny", now - days(8), timezone="America/New_York")  # 22:00 there
    customer(conn, "tokyo", now - days(8), timezone="Asia/Tokyo")  # 12:00 there
    customer(conn, "berlin", now - days(8), timezone="Europe/Berlin")  # 04:00 there
    customer(conn, "utc", now - days(8))  # 03:00 UTC
    conn.execute("SELECT skene.run_loop('dormant')")
    run_at = dict(
        conn.execute(
            "SELECT customer_id, to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') "
            "FROM skene.jobs WHERE loop_name = 'dormant'"
        ).fetchall()
    )
    assert run_at == {
        "ny": "2026-01-20 13:00",  # 08:00 in New York
        "tokyo": "2026-01-20 03:00",  # now
        "berlin": "2026-01-20 07:00",  # 08:00 in Berlin
        "utc": "2026-01-20 08:00",
    }


def test_a_retry_that_falls_into_quiet_hours_waits_for_them_to_end(
    catalogue: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    """Quiet hours are checked again at send time: a message queued outside them whose
    retry comes due inside them (Tokyo, 10:00-12:00 local) waits and is never dropped."""
    conn = catalogue
    quiet = {**DORMANT, "quiet_hours": {"start": "10:00", "end": "12:00"}}
    add_loop(conn, "dormant", "retention", quiet)
    customer(conn, "ada", T0 - days(8), timezone="Asia/Tokyo")  # 18:00 there: queued now
    conn.execute("SELECT skene.run_loop('dormant')")
    retry_due = T0 + timedelta(hours=16.5)  # 01:30 UTC next day, 10:30 in Tokyo
    conn.execute("UPDATE skene.jobs SET run_at = %s", (retry_due,))
    outbox = tmp_path / "outbox"
    drain(
        make_conninfo(db_url, options=f"-c skene.now={retry_due.isoformat()}"),
        OutboxProvider(outbox),
    )
    state, error, run_at = conn.execute(
        "SELECT state, last_error, run_at FROM skene.jobs"
    ).fetchone()  # type: ignore[misc]
    assert (state, error) == (
        "available",
        "quiet hours in the customer's time zone until 2026-01-21 03:00+0000",
    )
    assert T0 + timedelta(hours=18) <= run_at <= T0 + timedelta(hours=18.2)  # + jitter
    assert not outbox.exists() or not list(outbox.iterdir())
    # at 12:00 in Tokyo it goes out
    drain(
        make_conninfo(db_url, options=f"-c skene.now={(T0 + timedelta(hours=19)).isoformat()}"),
        OutboxProvider(outbox),
    )
    assert conn.execute("SELECT state FROM skene.jobs").fetchone() == ("succeeded",)
    assert len(list(outbox.iterdir())) == 1


def test_the_cap_across_marketing_loops_waits_for_the_next_run(
    catalogue: psycopg.Connection,
) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", DORMANT)
    add_loop(conn, "projects", "milestone", {"event": "export", "thresholds": [1]})
    customer(conn, "ada", T0 - days(8))
    customer(conn, "bob", T0 - days(8))
    set_now(conn, T0 - days(0.5))
    # a celebration half a day ago; tracked with an old time, so ada stays dormant
    conn.execute("SELECT skene.track('ada', 'export', '{}', %s)", (T0 - days(9),))
    set_now(conn, T0)
    conn.execute("SELECT skene.run_loop('dormant')")
    assert [c for c, _, _ in jobs(conn, "dormant")] == ["bob"]
    set_now(conn, T0 + days(1))
    conn.execute("SELECT skene.run_loop('dormant')")
    assert sorted(c for c, _, _ in jobs(conn, "dormant")) == ["ada", "bob"]


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ("SELECT customer_id FROM no_such_table", 'relation "no_such_table" does not exist'),
        ("SELECT 1 AS id", "returns no customer_id column"),
        ("SELECT customer_id FROM skene.customers, pg_sleep(5)", "statement timeout"),
    ],
)
def test_a_failing_segment_fails_its_run_and_queues_nothing(
    catalogue: psycopg.Connection, segment: str, message: str
) -> None:
    conn = catalogue
    add_loop(
        conn,
        "bad",
        "retention",
        {**DORMANT, "segment": segment, "segment_timeout": "1 seconds"},
    )
    add_loop(conn, "good", "retention", DORMANT)
    customer(conn, "ada", T0 - days(8))
    runs = {r.loop_name: r for r in run_due(conn, T0)}
    assert runs["bad"].state == "failed"
    assert message in (runs["bad"].error or "")
    assert jobs(conn, "bad") == []
    assert runs["good"].state == "succeeded"
    assert [c for c, _, _ in jobs(conn, "good")] == ["ada"]
    assert conn.execute(
        "SELECT count(*) FROM skene.loop_sends WHERE loop_name = 'bad'"
    ).fetchone() == (0,)


def test_a_segment_narrows_the_loop_and_passes_variables(catalogue: psycopg.Connection) -> None:
    conn = catalogue
    segment = (
        "SELECT customer_id, 'Acme' AS company FROM skene.customers WHERE customer_id LIKE 'a%'"
    )
    add_loop(conn, "seg", "retention", {**DORMANT, "segment": segment})
    customer(conn, "ada", T0 - days(8))
    customer(conn, "bob", T0 - days(8))
    conn.execute("SELECT skene.run_loop('seg')")
    rows = conn.execute("SELECT customer_id, payload -> 'vars' FROM skene.jobs").fetchall()
    assert rows == [("ada", {"company": "Acme"})]


def test_run_loop_names_an_unknown_loop(catalogue: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        catalogue.execute("SELECT skene.run_loop('nope')")
    assert "no retention loop 'nope'" in str(err.value)


def test_loops_running_at_once_share_the_frequency_cap(
    catalogue: psycopg.Connection, at: Callable[[datetime], psycopg.Connection]
) -> None:
    """pg_cron starts each loop in its own session: the second run waits for the first
    to commit, then sees its message and leaves the customer alone."""
    conn = catalogue
    add_loop(conn, "a", "retention", DORMANT)
    add_loop(conn, "b", "retention", DORMANT)
    customer(conn, "ada", T0 - days(8))
    first, second = at(T0), at(T0)
    first.execute("BEGIN")
    first.execute("SELECT skene.run_loop('a')")
    result: list[tuple] = []
    other = threading.Thread(
        target=lambda: result.append(
            second.execute("SELECT state, queued FROM skene.run_loop('b')").fetchone()
        )
    )
    other.start()
    other.join(1.0)
    assert other.is_alive()  # waiting for a's run
    first.execute("COMMIT")
    other.join(30)
    assert result == [("succeeded", 0)]
    assert conn.execute("SELECT loop_name FROM skene.jobs").fetchall() == [("a",)]


def test_the_worker_role_runs_a_loop_whose_segment_names_app_tables(
    catalogue: psycopg.Connection, at: Callable[[datetime], psycopg.Connection]
) -> None:
    """skene_worker runs the schedules pg_cron doesn't; the segment runs with the
    loop's search_path, so the caller's session (or temp tables) can't change it."""
    conn = catalogue
    conn.execute("CREATE TABLE public.app_users (id text, company text)")
    conn.execute("INSERT INTO public.app_users VALUES ('ada', 'Acme')")
    segment = "SELECT id AS customer_id, company FROM app_users"
    add_loop(conn, "seg", "retention", {**DORMANT, "segment": segment})
    customer(conn, "ada", T0 - days(8))
    customer(conn, "bob", T0 - days(8))
    worker = at(T0)
    worker.execute("SET ROLE skene_worker")
    worker.execute("CREATE TEMP TABLE app_users AS SELECT 'bob'::text AS id, 'Evil' AS company")
    worker.execute("SET search_path = pg_temp, public")
    (run,) = run_due(worker, T0)
    assert (run.state, run.error) == ("succeeded", None)
    rows = conn.execute("SELECT customer_id, payload -> 'vars' FROM skene.jobs").fetchall()
    assert rows == [("ada", {"company": "Acme"})]


def test_waiting_for_its_turn_does_not_use_up_a_runs_segment_timeout(
    catalogue: psycopg.Connection, at: Callable[[datetime], psycopg.Connection]
) -> None:
    """Another loop's run holds the turn for 2 s; this loop's segment_timeout is 1 s."""
    conn = catalogue
    add_loop(conn, "dormant", "retention", {**DORMANT, "segment_timeout": "1 seconds"})
    customer(conn, "ada", T0 - days(8))
    busy, worker = at(T0), at(T0)
    busy.execute("BEGIN")
    busy.execute("SELECT skene.retention_turn()")
    runs: list = []
    waiting = threading.Thread(target=lambda: runs.extend(run_due(worker, T0)))
    waiting.start()
    waiting.join(2.0)
    assert waiting.is_alive()
    busy.execute("COMMIT")
    waiting.join(30)
    assert [(r.state, r.error, r.queued) for r in runs] == [("succeeded", None, 1)]
