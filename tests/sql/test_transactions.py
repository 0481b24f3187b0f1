"""The gate runs inside the caller's transaction: roll back, and it never happened."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from tests.sql.helpers import check_and_increment, decision, scalar, set_now, used, utc

pytestmark = pytest.mark.usefixtures("catalogue")

TABLES = ("customers", "usage", "limit_hits", "jobs", "idempotency_keys", "plan_changes")


def counts(conn: psycopg.Connection) -> dict[str, int]:
    return {t: scalar(conn, f"SELECT count(*) FROM skene.{t}") for t in TABLES}


@pytest.fixture
def tx(connect: Callable[..., psycopg.Connection]) -> psycopg.Connection:
    c = connect(autocommit=False)
    set_now(c, "2026-03-10 12:00:00")
    c.commit()
    return c


def test_rollback_leaves_no_usage_no_hit_no_job(
    conn: psycopg.Connection, tx: psycopg.Connection
) -> None:
    empty = counts(conn)
    for _ in range(100):
        check_and_increment(tx, "acme", "api_calls")
    assert check_and_increment(tx, "acme", "api_calls")["reason"] == "limit_reached"
    check_and_increment(tx, "acme", "rolling", 5, key="k")
    assert scalar(tx, "SELECT count(*) FROM skene.jobs") == 1  # visible inside
    assert counts(conn) == empty  # and to no one else
    tx.rollback()
    assert counts(conn) == empty == dict.fromkeys(TABLES, 0)


def test_rollback_of_an_existing_customers_calls(
    conn: psycopg.Connection, tx: psycopg.Connection
) -> None:
    check_and_increment(conn, "acme", "api_calls", 99)
    before = counts(conn)
    check_and_increment(tx, "acme", "api_calls")  # fast path
    check_and_increment(tx, "acme", "api_calls")  # blocked: limit hit, prompt
    tx.execute("SELECT skene.set_plan('acme', 'pro')")
    check_and_increment(tx, "acme", "api_calls", 50)
    tx.rollback()
    assert counts(conn) == before
    assert used(conn, "acme", "api_calls") == 99
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        True, "ok", "api_calls", "free", 100, 100, 0, utc("2026-04-01 00:00:00")
    )


def test_rolled_back_savepoint_keeps_the_rest(
    conn: psycopg.Connection, tx: psycopg.Connection
) -> None:
    check_and_increment(tx, "acme", "api_calls", 10)
    with pytest.raises(psycopg.errors.InvalidParameterValue), tx.transaction():
        check_and_increment(tx, "acme", "api_calls", 20)
        check_and_increment(tx, "acme", "nope")
    assert check_and_increment(tx, "acme", "api_calls")["used"] == 11
    tx.commit()
    assert used(conn, "acme", "api_calls") == 11


def test_committed_calls_are_seen_by_others(
    conn: psycopg.Connection, tx: psycopg.Connection
) -> None:
    check_and_increment(tx, "acme", "api_calls", 100)
    check_and_increment(tx, "acme", "api_calls")
    tx.commit()
    assert counts(conn) == {
        "customers": 1,
        "usage": 1,
        "limit_hits": 1,
        "jobs": 1,
        "idempotency_keys": 0,
        "plan_changes": 0,
    }
