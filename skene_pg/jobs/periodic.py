"""Periodic tasks that must run once per period across every worker (a daily
housekeeping, a daily reconcile): the claim is a row in skene.periodic_runs
(skene.claim_periodic), never the worker's memory, so three workers polling at once
still run the task once."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

import psycopg

from skene_pg.jobs.kinds import PeriodicTask

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
# How often each worker asks whether a shared task is due: the claim is one row
# update, cheap, but not worth a write on every poll of every worker.
PROBE_EVERY = 60.0


def claim(conn: psycopg.Connection, name: str, every: timedelta) -> bool:
    """True for exactly one caller per `every`, across all workers."""
    row = conn.execute("SELECT skene.claim_periodic(%s, %s)", (name, every)).fetchone()
    return bool(row and row[0])


def release(conn: psycopg.Connection, name: str) -> None:
    """Let the next claim succeed at once (the run stopped with work left, or failed)."""
    conn.execute("SELECT skene.release_periodic(%s)", (name,))


def once_per_period(
    name: str,
    every: timedelta,
    run: Callable[[psycopg.Connection], object],
    probe_every: float = PROBE_EVERY,
) -> PeriodicTask:
    """A PeriodicTask that runs `run` only when this worker wins the period's claim. A
    run that raises gives the claim back, so the next probe (of any worker) tries
    again instead of waiting a whole period."""

    def claimed(conn: psycopg.Connection) -> object:
        if not claim(conn, name, every):
            return None
        try:
            return run(conn)
        except Exception:
            # a lost connection cannot release: the claim then lapses after `every`
            with contextlib.suppress(psycopg.Error):
                release(conn, name)
            raise

    return PeriodicTask(name, claimed, probe_every)
