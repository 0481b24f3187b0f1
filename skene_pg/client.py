"""The Python client: `Skene` (threads) and `AsyncSkene` (asyncio) call the SQL contract
through a connection pool and return frozen dataclasses.

    skene = Skene("postgresql://app@db/app")          # or Skene(ConnectionPool(...))
    decision = skene.check_and_increment("cus_42", "api_calls")
    if not decision.allowed: ...

Both classes run the same `calls.Call`s (the SQL, its parameters and the row ->
result mapping live once, in calls.py); they differ only in how a query is executed.
Each call is its own transaction on a pooled autocommit connection, so a gate's count
and its upgrade prompt commit whatever the caller's own transaction does. No statement is
prepared on the server (PgBouncer in transaction mode is fine), and a constructor
opens nothing: the pool opens on the first call.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout, TooManyRequests

from skene_pg import calls, db
from skene_pg.calls import Call, Decision, Refund, Steps
from skene_pg.errors import SkeneError, from_psycopg
from skene_pg.gates import Gate

T = TypeVar("T")
__all__ = ["AsyncSkene", "Decision", "Refund", "Skene"]

_POOL_ERRORS = (psycopg.Error, PoolTimeout, TooManyRequests)


class Skene:
    """The client for threaded code (Django, Flask, scripts).

    `database` is a URL (a pool is made for it: `min_size`, `max_size`, `timeout` in
    seconds to wait for a connection) or a psycopg_pool.ConnectionPool of yours.
    Errors raise skene_pg.SkeneError subclasses."""

    def __init__(
        self,
        database: str | ConnectionPool,
        *,
        min_size: int = db.POOL_MIN_SIZE,
        max_size: int = db.POOL_MAX_SIZE,
        timeout: float = db.POOL_TIMEOUT,
    ) -> None:
        if isinstance(database, str):
            self.pool: ConnectionPool = db.pool(
                database, min_size=min_size, max_size=max_size, timeout=timeout
            )
            self._owns_pool = True
        else:
            self.pool = database
            self._owns_pool = False
        self._opened = False
        self._lock = threading.Lock()

    def _run(self, call: Call[T]) -> T:
        try:
            if not self._opened:
                with self._lock:
                    self.pool.open()  # a no-op on a pool already open
                    self._opened = True
            with self.pool.connection() as conn:
                rows = conn.execute(call.query, call.params).fetchall()
        except _POOL_ERRORS as exc:
            raise from_psycopg(exc) from exc
        return call.result(rows)

    def drive(self, steps: Steps[T]) -> T:
        """Run a sequence of calls (calls.Steps) to its outcome."""
        try:
            call = next(steps)
            while True:
                try:
                    result = self._run(call)
                except SkeneError as exc:
                    call = steps.throw(exc)
                else:
                    call = steps.send(result)
        except StopIteration as stop:
            return stop.value

    def check(self, customer: str, feature: str, amount: int = 1) -> Decision:
        """Would `amount` units be allowed? Counts nothing."""
        return self._run(calls.check(customer, feature, amount))

    def check_and_increment(
        self, customer: str, feature: str, amount: int = 1, idempotency_key: str | None = None
    ) -> Decision:
        """Count and decide in one step; the first block of a period queues the prompt."""
        return self._run(calls.check_and_increment(customer, feature, amount, idempotency_key))

    def refund(
        self, customer: str, feature: str, amount: int | None, idempotency_key: str
    ) -> Refund:
        """Give back (up to `amount`, None: all of) what the call counted with this key."""
        return self._run(calls.refund(customer, feature, amount, idempotency_key))

    def identify(
        self,
        customer: str,
        email: str | None = None,
        name: str | None = None,
        attributes: dict[str, Any] | None = None,
        timezone: str | None = None,
    ) -> None:
        """Register or update contact details; None keeps the stored value."""
        self._run(calls.identify(customer, email, name, attributes, timezone))

    def track(
        self,
        customer: str,
        event: str,
        properties: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        """Record activity (retention) and count events milestones watch."""
        self._run(calls.track(customer, event, properties, occurred_at))

    def gates(self) -> list[Gate]:
        """Every feature with its display name, match patterns, message and upgrade URL."""
        return self._run(calls.list_gates())

    def close(self) -> None:
        """Close the pool if this client made it."""
        if self._owns_pool:
            self.pool.close()

    def __enter__(self) -> Skene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSkene:
    """The client for asyncio code (FastAPI, Starlette): the same calls, awaited.

    `database` is a URL or a psycopg_pool.AsyncConnectionPool of yours. The pool
    opens on the first call, in the running event loop."""

    def __init__(
        self,
        database: str | AsyncConnectionPool,
        *,
        min_size: int = db.POOL_MIN_SIZE,
        max_size: int = db.POOL_MAX_SIZE,
        timeout: float = db.POOL_TIMEOUT,
    ) -> None:
        if isinstance(database, str):
            self.pool: AsyncConnectionPool = db.async_pool(
                database, min_size=min_size, max_size=max_size, timeout=timeout
            )
            self._owns_pool = True
        else:
            self.pool = database
            self._owns_pool = False
        self._opened = False
        self._lock: asyncio.Lock | None = None

    async def _run(self, call: Call[T]) -> T:
        try:
            if not self._opened:
                self._lock = self._lock or asyncio.Lock()
                async with self._lock:
                    await self.pool.open()
                    self._opened = True
            async with self.pool.connection() as conn:
                cursor = await conn.execute(call.query, call.params)
                rows = await cursor.fetchall()
        except _POOL_ERRORS as exc:
            raise from_psycopg(exc) from exc
        return call.result(rows)

    async def drive(self, steps: Steps[T]) -> T:
        """Run a sequence of calls (calls.Steps) to its outcome."""
        try:
            call = next(steps)
            while True:
                try:
                    result = await self._run(call)
                except SkeneError as exc:
                    call = steps.throw(exc)
                else:
                    call = steps.send(result)
        except StopIteration as stop:
            return stop.value

    async def check(self, customer: str, feature: str, amount: int = 1) -> Decision:
        return await self._run(calls.check(customer, feature, amount))

    async def check_and_increment(
        self, customer: str, feature: str, amount: int = 1, idempotency_key: str | None = None
    ) -> Decision:
        return await self._run(
            calls.check_and_increment(customer, feature, amount, idempotency_key)
        )

    async def refund(
        self, customer: str, feature: str, amount: int | None, idempotency_key: str
    ) -> Refund:
        return await self._run(calls.refund(customer, feature, amount, idempotency_key))

    async def identify(
        self,
        customer: str,
        email: str | None = None,
        name: str | None = None,
        attributes: dict[str, Any] | None = None,
        timezone: str | None = None,
    ) -> None:
        await self._run(calls.identify(customer, email, name, attributes, timezone))

    async def track(
        self,
        customer: str,
        event: str,
        properties: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        await self._run(calls.track(customer, event, properties, occurred_at))

    async def gates(self) -> list[Gate]:
        return await self._run(calls.list_gates())

    async def close(self) -> None:
        if self._owns_pool:
            await self.pool.close()

    async def __aenter__(self) -> AsyncSkene:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
