"""The daily tasks of `skene-pg listen` (housekeeping, the billing reconcile) run once a
day across all workers: three real workers polling at once claim each once, and again
the next day; a run that fails or runs out of time hands the claim back."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
import pytest

from skene_pg import housekeeping
from skene_pg.billing import registry as billing
from skene_pg.jobs import protocol as q
from skene_pg.jobs.kinds import Outcome, PeriodicTask
from skene_pg.jobs.periodic import DAY, claim, once_per_period
from skene_pg.jobs.worker import Worker, WorkerSettings
from tests.housekeeping.conftest import D0, days, finish_due, job_ids, set_now, url_at

pytestmark = pytest.mark.usefixtures("catalogue")


class _Idle:
    """Handles a kind nobody queues: these workers only run their periodic tasks."""

    kind = "housekeeping-test-idle"

    def prepare(self, conn: psycopg.Connection, batch: Sequence[q.Job]) -> dict[int, Any]:
        return {}

    def run(self, job: q.Job, context: Any) -> Outcome:
        return Outcome("succeeded")

    def close(self) -> None:
        pass


def finished_job(conn: psycopg.Connection, at: datetime, key: str) -> int:
    set_now(conn, at)
    (job_id,) = conn.execute(
        "SELECT skene.enqueue('test', '{}', NULL, NULL, %s, NULL, 1)", (key,)
    ).fetchone()
    finish_due(conn, "succeeded", ["test"])
    return int(job_id)


def claims(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, claims FROM skene.periodic_runs").fetchall())


def reconcile_jobs(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM skene.jobs WHERE payload ->> 'event_type' = 'reconcile'"
    ).fetchone()
    return int(row[0]) if row else -1


def poll_together(db_url: str, at: datetime, tasks: list[PeriodicTask]) -> None:
    """Three workers, three drains each, started together: every worker polls (and
    probes every task: probe_every is 0) each time."""
    workers = [
        Worker(
            url_at(db_url, at),
            [_Idle()],
            WorkerSettings(drain=True, poll_interval=0.05, name=f"w{i}"),
            periodic=tasks,
        )
        for i in range(3)
    ]
    for _ in range(3):
        threads = [threading.Thread(target=w.run) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a worker did not finish its drain"


def test_three_workers_run_each_daily_task_once_a_day(
    conn: psycopg.Connection, db_url: str
) -> None:
    for n in range(2):
        conn.execute("SELECT skene.link_billing_customer(%s, 'stripe', %s)", (f"a{n}", f"cus_{n}"))
    stale = finished_job(conn, D0 - days(31), "stale")  # older than 30 days on day one
    aging = finished_job(conn, D0 - days(29.5), "aging")  # older than 30 days on day two
    runs: list[datetime] = []
    lock = threading.Lock()

    def counted(c: psycopg.Connection) -> None:
        with lock:
            runs.append(c.execute("SELECT skene.now()").fetchone()[0])

    tasks = [
        housekeeping.periodic_task(probe_every=0),
        *billing.periodic_tasks("sk_test_key", probe_every=0),
        once_per_period("counted", DAY, counted, probe_every=0),
    ]
    names = {"housekeeping", "billing reconcile", "counted"}
    assert {t.name for t in tasks} == names

    day_one = D0 + days(1 / 1440)
    poll_together(db_url, day_one, tasks)
    assert runs == [day_one]
    assert claims(conn) == dict.fromkeys(names, 1)
    assert reconcile_jobs(conn) == 2  # one sync per linked customer
    assert stale not in job_ids(conn) and aging in job_ids(conn)

    poll_together(db_url, D0 + days(23 / 24), tasks)  # later the same day: nothing
    assert len(runs) == 1
    assert claims(conn) == dict.fromkeys(names, 1)

    day_two = day_one + days(1)
    poll_together(db_url, day_two, tasks)
    assert runs == [day_one, day_two]
    assert claims(conn) == dict.fromkeys(names, 2)
    assert reconcile_jobs(conn) == 4
    assert aging not in job_ids(conn)


def test_the_reconcile_runs_only_where_stripe_is_configured() -> None:
    assert billing.periodic_tasks(None) == []
    assert billing.periodic_tasks("") == []
    assert [t.name for t in billing.periodic_tasks("sk_test_key")] == ["billing reconcile"]


def test_a_failed_run_hands_its_claim_back(conn: psycopg.Connection) -> None:
    attempts: list[int] = []

    def flaky(c: psycopg.Connection) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            c.execute("SELECT 1 / 0")

    task = once_per_period("flaky", DAY, flaky)
    with pytest.raises(psycopg.errors.DivisionByZero):
        task.run(conn)
    task.run(conn)  # the next probe tries again at once, and succeeds
    task.run(conn)  # then the day is taken
    assert len(attempts) == 2
    assert claims(conn) == {"flaky": 2}


def test_housekeeping_out_of_time_continues_at_the_next_probe(conn: psycopg.Connection) -> None:
    # more than one batch (1000 rows) of old finished jobs
    conn.execute(
        "SELECT skene.enqueue('bulk', '{}', NULL, NULL, 'bulk:' || n, NULL, 1) "
        "FROM generate_series(1, 1500) n"
    )
    conn.execute(
        "UPDATE skene.jobs SET state = 'succeeded', finished_at = %s WHERE kind = 'bulk'",
        (D0 - days(40),),
    )
    task = housekeeping.periodic_task(budget=0)
    task.run(conn)  # one batch, then out of time: the claim is handed back
    assert conn.execute("SELECT count(*) FROM skene.jobs").fetchone() == (500,)
    task.run(conn)
    assert job_ids(conn) == set()
    assert task.run(conn) is None  # done for today
    assert claims(conn) == {"housekeeping": 2}


def test_a_claim_needs_a_name_and_a_positive_period(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="non-empty name"):
        claim(conn, "", DAY)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="positive period") as raised:
        claim(conn, "housekeeping", DAY * 0)
    assert raised.value.diag.message_hint
    assert claim(conn, "housekeeping", DAY) and not claim(conn, "housekeeping", DAY)
    set_now(conn, D0 + DAY)
    assert claim(conn, "housekeeping", DAY)
