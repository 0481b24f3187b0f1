"""Housekeeping: delete finished work older than `[housekeeping] keep_finished`
(skene.housekeep, in sql/*_housekeeping.up.sql), daily, by one of the workers.

Each call of skene.housekeep deletes one batch per table in its own short transaction,
so the gate and the queue never wait long on it; a run repeats it until nothing is
left, or until its time budget is spent and it hands the rest to the next probe."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import psycopg

from skene_pg.jobs import periodic
from skene_pg.jobs.kinds import PeriodicTask

log = logging.getLogger(__name__)

TASK = "housekeeping"
BATCH_SIZE = 1000
# A run holds the worker's main thread (no claims meanwhile): a first run on a large
# backlog is spread over several probes instead.
BUDGET_SECONDS = 10.0


@dataclass
class Result:
    deleted: dict[str, int] = field(default_factory=dict)  # what -> rows (see housekeep)
    done: bool = True  # False: the budget ran out with work left

    def summary(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in self.deleted.items()) or "nothing"


def housekeep(
    conn: psycopg.Connection, batch_size: int = BATCH_SIZE, budget: float | None = None
) -> Result:
    """Call skene.housekeep until no table fills a batch (or `budget` seconds pass),
    each call its own transaction. Counts add up over the calls."""
    result = Result()
    deadline = None if budget is None else time.monotonic() + budget
    while True:
        with conn.transaction():
            rows = conn.execute(
                "SELECT what, deleted FROM skene.housekeep(%s)", (batch_size,)
            ).fetchall()
        for what, deleted in rows:
            result.deleted[what] = result.deleted.get(what, 0) + int(deleted)
        if all(deleted < batch_size for _, deleted in rows):
            return result
        if deadline is not None and time.monotonic() >= deadline:
            result.done = False
            return result


def run_daily(conn: psycopg.Connection, budget: float = BUDGET_SECONDS) -> Result:
    result = housekeep(conn, budget=budget)
    if not result.done:
        periodic.release(conn, TASK)  # the next probe, of any worker, goes on
    log.info(
        "housekeeping deleted %s%s",
        result.summary(),
        "" if result.done else "; more left, continuing at the next probe",
    )
    return result


def periodic_task(
    probe_every: float = periodic.PROBE_EVERY, budget: float = BUDGET_SECONDS
) -> PeriodicTask:
    """Housekeeping once a day across all workers (skene.claim_periodic)."""
    return periodic.once_per_period(
        TASK, periodic.DAY, lambda conn: run_daily(conn, budget), probe_every
    )
