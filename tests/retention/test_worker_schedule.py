"""Without pg_cron, `skene-pg listen` runs the schedules: three real workers polling at
once run each slot once and queue each message once."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from skene_pg.jobs import protocol as q
from skene_pg.jobs.kinds import Outcome
from skene_pg.jobs.worker import Worker, WorkerSettings
from skene_pg.retention.schedules import periodic_task
from tests.retention.conftest import DORMANT, T0, add_loop, customer, days, jobs


class _Idle:
    """Handles a kind nobody queues: these workers only run schedules."""

    kind = "retention-test-idle"

    def prepare(self, conn: psycopg.Connection, batch: Sequence[q.Job]) -> dict[int, Any]:
        return {}

    def run(self, job: q.Job, context: Any) -> Outcome:
        return Outcome("succeeded")

    def close(self) -> None:
        pass


def test_three_workers_run_the_schedule_once(catalogue: psycopg.Connection, db_url: str) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", DORMANT)
    for i in range(20):
        customer(conn, f"c{i}", T0 - days(8 + i))
    # the workers' sessions read skene's clock at 09:00:30 on the day
    url = make_conninfo(db_url, options=f"-c skene.now={(T0 + days(1 / 2880)).isoformat()}")
    workers = [
        Worker(
            url,
            [_Idle()],
            WorkerSettings(drain=True, poll_interval=0.05, name=f"w{i}"),
            periodic=[periodic_task()],
        )
        for i in range(3)
    ]
    for _ in range(3):  # three drains each: every worker polls (and schedules) each time
        threads = [threading.Thread(target=w.run) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert sorted(c for c, _, _ in jobs(conn, "dormant")) == sorted(f"c{i}" for i in range(20))
    assert conn.execute("SELECT slot, state FROM skene.loop_runs").fetchall() == [(T0, "succeeded")]
