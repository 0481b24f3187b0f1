"""Calling the gate from tests: decisions as dicts, the clock, and threads lined up."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

Decision = dict[str, Any]


def utc(text: str) -> datetime:
    """'2026-03-31 23:59:59' as an aware UTC datetime (what psycopg returns)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def set_now(conn: psycopg.Connection, at: str) -> None:
    """Move skene's clock for this connection; `at` is read as UTC."""
    conn.execute("SELECT pg_catalog.set_config('skene.now', %s, false)", (f"{at}+00",))


def check_and_increment(
    conn: psycopg.Connection,
    customer: str | None,
    feature: str | None,
    amount: int | None = 1,
    key: str | None = None,
) -> Decision:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM skene.check_and_increment(%s, %s, %s, %s)",
            (customer, feature, amount, key),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def check(
    conn: psycopg.Connection, customer: str | None, feature: str | None, amount: int | None = 1
) -> Decision:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM skene.check(%s, %s, %s)", (customer, feature, amount))
        row = cur.fetchone()
    assert row is not None
    return row


def decision(
    allowed: bool,
    reason: str,
    feature: str,
    plan: str,
    used: int,
    usage_limit: int | None,
    remaining: int | None,
    resets_at: datetime | None,
) -> Decision:
    """The decision we expect, field by field, in the contract's order."""
    return {
        "allowed": allowed,
        "reason": reason,
        "feature": feature,
        "plan": plan,
        "used": used,
        "usage_limit": usage_limit,
        "remaining": remaining,
        "resets_at": resets_at,
    }


def scalar(conn: psycopg.Connection, query: str, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def used(conn: psycopg.Connection, customer: str, feature: str) -> int | None:
    """What skene.usage holds for a customer and feature (None: no counter)."""
    row = conn.execute(
        "SELECT used FROM skene.usage WHERE customer_id = %s AND feature = %s", (customer, feature)
    ).fetchone()
    return None if row is None else row[0]


def run_together(
    connections: Sequence[psycopg.Connection],
    work: Callable[[int, psycopg.Connection], Any],
    timeout: float = 60,
) -> list[Any]:
    """Run work(i, conn) on one thread per connection, released at the same instant by
    a barrier. Returns each thread's result; re-raises the first exception."""
    barrier = threading.Barrier(len(connections))
    results: list[Any] = [None] * len(connections)
    errors: list[BaseException] = []

    def body(i: int, conn: psycopg.Connection) -> None:
        try:
            barrier.wait(timeout)
            results[i] = work(i, conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=body, args=(i, c), daemon=True) for i, c in enumerate(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a caller hung (lock wait that never ended?)"
    if errors:
        raise errors[0]
    return results
