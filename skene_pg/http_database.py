"""How webhook endpoints reach the database without exhausting it: one bounded psycopg
pool (`pool_size` sessions, never more, `application_name` skene-pg-webhooks); a
request that gets no connection within `pool_timeout`, or finds the database away,
raises `Busy`, which the endpoint answers with a 503 and Retry-After."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import psycopg
from psycopg_pool import PoolTimeout, TooManyRequests

from skene_pg import db
from skene_pg.http_limits import HttpLimits

log = logging.getLogger("skene_pg.http")

APPLICATION_NAME = "skene-pg-webhooks"  # pg_stat_activity tells the server's sessions


class Busy(Exception):
    """No database connection within the pool's timeout, or the database is away."""


class Database:
    """How endpoints reach the database: one bounded pool (`pool_size` sessions at
    most, opened lazily, `APPLICATION_NAME`), used from as many threads as it has
    connections; a request waits at most `pool_timeout` for one, then `Busy`."""

    def __init__(self, url: str, limits: HttpLimits):
        self.limits = limits
        self.pool = db.pool(
            url,
            min_size=1,
            max_size=limits.pool_size,
            timeout=limits.pool_timeout,
            max_waiting=limits.pool_size,
            name="skene-webhooks",
            connect_timeout=10,
            application_name=APPLICATION_NAME,
        )
        self._slots: anyio.Semaphore | None = None
        self._threads: anyio.CapacityLimiter | None = None

    def open(self) -> None:
        self._slots = anyio.Semaphore(self.limits.pool_size)
        self._threads = anyio.CapacityLimiter(self.limits.pool_size)
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close(timeout=5)

    async def run(self, work: Callable[[psycopg.Connection], Any]) -> Any:
        """`work(conn)` on a pooled autocommit connection, in a thread of our own."""
        if self._slots is None or self._threads is None:
            raise RuntimeError("Database.open() was not called")
        try:
            with anyio.fail_after(self.limits.pool_timeout):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise Busy(f"all {self.limits.pool_size} database connections are busy; retry") from exc
        try:
            return await anyio.to_thread.run_sync(self._run, work, limiter=self._threads)
        finally:
            self._slots.release()

    def _run(self, work: Callable[[psycopg.Connection], Any]) -> Any:
        """psycopg.DataError (the delivery itself is wrong) goes up to the endpoint, a
        400; any other failure is Busy, a 503: nothing was stored, and the same
        delivery later (the database back, or its setup fixed) will be."""
        try:
            with self.pool.connection() as conn:
                return work(conn)
        except (PoolTimeout, TooManyRequests) as exc:
            raise Busy(
                f"no database connection within {self.limits.pool_timeout:g} s; retry"
            ) from exc
        except psycopg.DataError:
            raise
        except psycopg.Error as exc:
            if _transient(exc):  # gone, restarting, too many, timed out, deadlock
                log.warning("webhook: database unavailable: %s", _first_line(exc))
                raise Busy("the database is unavailable; retry") from exc
            log.error("webhook: the database refused the delivery: %s", _first_line(exc))
            raise Busy(f"the database refused it ({_first_line(exc)}); retry") from exc


def _transient(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    if state is None:
        return True  # no answer from the server: the connection failed or broke
    return state[:2] in ("08", "40", "53", "57") or state == "55P03"


def _first_line(exc: psycopg.Error) -> str:
    return (exc.diag.message_primary or str(exc).strip().split("\n")[0])[:300]
