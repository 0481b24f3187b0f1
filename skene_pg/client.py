"""The Python client: `Skene` (threads) and `AsyncSkene` (asyncio) call the SQL contract
through a connection pool and return frozen dataclasses.

    skene = Skene("postgresql://app@db/app")          # or Skene(ConnectionPool(...))
    decision = skene.check_and_increment("cus_42", "api_calls")
    if not decision.allowed: ...

Both classes run the same `_Call`s (the SQL, its parameters and the row -> result
mapping live once, below); they differ only in how a query is executed. Each call is
its own transaction on a pooled autocommit connection, so a gate's count and its
upgrade prompt commit whatever the caller's own transaction does. No statement is
prepared on the server (PgBouncer in transaction mode is fine), and a constructor
opens nothing: the pool opens on the first call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout, TooManyRequests

from skene_pg import db
from skene_pg.errors import from_psycopg
from skene_pg.gates import Gate

T = TypeVar("T")
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Decision:
    """The gate's answer (skene.decision): None for usage_limit and remaining means
    unlimited, for resets_at that usage never resets. resets_at is in UTC."""

    allowed: bool
    reason: str  # ok | limit_reached | not_in_plan | over_soft_limit | duplicate
    feature: str
    plan: str
    used: int
    usage_limit: int | None
    remaining: int | None
    resets_at: datetime | None


@dataclass(frozen=True)
class Refund:
    """What skene.refund gave back, and the usage after it."""

    refunded: int  # units given back; 0 when nothing was
    reason: str  # refunded | not_counted | expired
    feature: str
    plan: str
    used: int
    usage_limit: int | None
    remaining: int | None
    resets_at: datetime | None


_USAGE_COLUMNS = "feature, plan, used, usage_limit, remaining, resets_at"
_DECISION_COLUMNS = f"allowed, reason, {_USAGE_COLUMNS}"
_REFUND_COLUMNS = f"refunded, reason, {_USAGE_COLUMNS}"


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def decision_from_row(row: Row) -> Decision:
    allowed, reason, feature, plan, used, usage_limit, remaining, resets_at = row
    return Decision(allowed, reason, feature, plan, used, usage_limit, remaining, _utc(resets_at))


def _one_decision(rows: Sequence[Row]) -> Decision:
    return decision_from_row(rows[0])


def _one_refund(rows: Sequence[Row]) -> Refund:
    refunded, reason, feature, plan, used, usage_limit, remaining, resets_at = rows[0]
    return Refund(refunded, reason, feature, plan, used, usage_limit, remaining, _utc(resets_at))


def _nothing(rows: Sequence[Row]) -> None:
    return None


def _gates(rows: Sequence[Row]) -> list[Gate]:
    return [Gate.from_row(row) for row in rows]


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One round trip: a query, its parameters, and how its rows become the result."""

    query: str
    params: tuple[Any, ...]
    result: Callable[[Sequence[Row]], T]


def _check(customer: str, feature: str, amount: int) -> _Call[Decision]:
    return _Call(
        f"SELECT {_DECISION_COLUMNS} FROM skene.check(%s::text, %s::text, %s::bigint)",
        (customer, feature, amount),
        _one_decision,
    )


def _check_and_increment(
    customer: str, feature: str, amount: int, idempotency_key: str | None
) -> _Call[Decision]:
    return _Call(
        f"SELECT {_DECISION_COLUMNS} FROM skene.check_and_increment("
        "%s::text, %s::text, %s::bigint, %s::text)",
        (customer, feature, amount, idempotency_key),
        _one_decision,
    )


def _refund(customer: str, feature: str, amount: int | None, idempotency_key: str) -> _Call[Refund]:
    return _Call(
        f"SELECT {_REFUND_COLUMNS} FROM skene.refund(%s::text, %s::text, %s::bigint, %s::text)",
        (customer, feature, amount, idempotency_key),
        _one_refund,
    )


def _identify(
    customer: str,
    email: str | None,
    name: str | None,
    attributes: dict[str, Any] | None,
    timezone: str | None,
) -> _Call[None]:
    return _Call(
        "SELECT skene.identify(%s::text, %s::text, %s::text, %s::jsonb, %s::text)",
        (customer, email, name, Jsonb(attributes) if attributes is not None else None, timezone),
        _nothing,
    )


def _track(
    customer: str, event: str, properties: dict[str, Any] | None, occurred_at: datetime | None
) -> _Call[None]:
    params: tuple[Any, ...] = (customer, event, Jsonb(properties or {}))
    if occurred_at is None:  # the function's default: now, on skene's clock
        return _Call("SELECT skene.track(%s::text, %s::text, %s::jsonb)", params, _nothing)
    return _Call(
        "SELECT skene.track(%s::text, %s::text, %s::jsonb, %s::timestamptz)",
        (*params, occurred_at),
        _nothing,
    )


def _list_gates() -> _Call[list[Gate]]:
    return _Call("SELECT feature, name, match, message, upgrade_url FROM skene.gates()", (), _gates)


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

    def _run(self, call: _Call[T]) -> T:
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

    def check(self, customer: str, feature: str, amount: int = 1) -> Decision:
        """Would `amount` units be allowed? Counts nothing."""
        return self._run(_check(customer, feature, amount))

    def check_and_increment(
        self, customer: str, feature: str, amount: int = 1, idempotency_key: str | None = None
    ) -> Decision:
        """Count and decide in one step; the first block of a period queues the prompt."""
        return self._run(_check_and_increment(customer, feature, amount, idempotency_key))

    def refund(
        self, customer: str, feature: str, amount: int | None, idempotency_key: str
    ) -> Refund:
        """Give back (up to `amount`, None: all of) what the call counted with this key."""
        return self._run(_refund(customer, feature, amount, idempotency_key))

    def identify(
        self,
        customer: str,
        email: str | None = None,
        name: str | None = None,
        attributes: dict[str, Any] | None = None,
        timezone: str | None = None,
    ) -> None:
        """Register or update contact details; None keeps the stored value."""
        self._run(_identify(customer, email, name, attributes, timezone))

    def track(
        self,
        customer: str,
        event: str,
        properties: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        """Record activity (retention) and count events milestones watch."""
        self._run(_track(customer, event, properties, occurred_at))

    def gates(self) -> list[Gate]:
        """Every feature with its display name, match patterns, message and upgrade URL."""
        return self._run(_list_gates())

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

    async def _run(self, call: _Call[T]) -> T:
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

    async def check(self, customer: str, feature: str, amount: int = 1) -> Decision:
        return await self._run(_check(customer, feature, amount))

    async def check_and_increment(
        self, customer: str, feature: str, amount: int = 1, idempotency_key: str | None = None
    ) -> Decision:
        return await self._run(_check_and_increment(customer, feature, amount, idempotency_key))

    async def refund(
        self, customer: str, feature: str, amount: int | None, idempotency_key: str
    ) -> Refund:
        return await self._run(_refund(customer, feature, amount, idempotency_key))

    async def identify(
        self,
        customer: str,
        email: str | None = None,
        name: str | None = None,
        attributes: dict[str, Any] | None = None,
        timezone: str | None = None,
    ) -> None:
        await self._run(_identify(customer, email, name, attributes, timezone))

    async def track(
        self,
        customer: str,
        event: str,
        properties: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        await self._run(_track(customer, event, properties, occurred_at))

    async def gates(self) -> list[Gate]:
        return await self._run(_list_gates())

    async def close(self) -> None:
        if self._owns_pool:
            await self.pool.close()

    async def __aenter__(self) -> AsyncSkene:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
