"""Idempotency keys: a retried call counts once and gets the original outcome back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import psycopg
import pytest

from tests.sql.helpers import (
    Decision,
    check_and_increment,
    decision,
    run_together,
    scalar,
    set_now,
    used,
    utc,
)

pytestmark = pytest.mark.usefixtures("catalogue")

APRIL = utc("2026-04-01 00:00:00")


def test_same_key_twice_counts_once(conn: psycopg.Connection) -> None:
    first = check_and_increment(conn, "acme", "api_calls", 3, key="req-1")
    assert first == decision(True, "ok", "api_calls", "free", 3, 100, 97, APRIL)
    check_and_increment(conn, "acme", "api_calls", 5)  # other usage in between
    again = check_and_increment(conn, "acme", "api_calls", 3, key="req-1")
    assert again == {**first, "reason": "duplicate"}  # the original outcome
    assert used(conn, "acme", "api_calls") == 8
    # the same key for another feature or customer is another call
    assert check_and_increment(conn, "acme", "daily", key="req-1")["reason"] == "ok"
    assert check_and_increment(conn, "other", "api_calls", key="req-1")["reason"] == "ok"


def test_key_on_a_new_customer_and_on_the_slow_path(conn: psycopg.Connection) -> None:
    first = check_and_increment(conn, "newbie", "rolling", 10, key="k")
    assert first == decision(True, "ok", "rolling", "free", 10, 100, 90, utc("2026-04-09 00:00:00"))
    assert check_and_increment(conn, "newbie", "rolling", 10, key="k") == {
        **first,
        "reason": "duplicate",
    }
    assert used(conn, "newbie", "rolling") == 10


def test_duplicate_of_an_allowed_call_stays_allowed_after_the_limit(
    conn: psycopg.Connection,
) -> None:
    first = check_and_increment(conn, "acme", "api_calls", 100, key="big")
    assert first["allowed"]
    assert check_and_increment(conn, "acme", "api_calls")["reason"] == "limit_reached"
    assert check_and_increment(conn, "acme", "api_calls", 100, key="big") == {
        **first,
        "reason": "duplicate",
    }
    assert used(conn, "acme", "api_calls") == 100


def test_concurrent_same_key_counts_once(
    connections: Callable[..., list[psycopg.Connection]], conn: psycopg.Connection
) -> None:
    for round_ in range(5):
        callers = connections(8)

        def retry(i: int, c: psycopg.Connection, key: str = f"retry-{round_}") -> Decision:
            return check_and_increment(c, "acme", "api_calls", 2, key=key)

        results = run_together(callers, retry)
        reasons = Counter(r["reason"] for r in results)
        assert reasons == {"ok": 1, "duplicate": 7}
        assert all(r["allowed"] and r["used"] == 2 * (round_ + 1) for r in results)
        for c in callers:
            c.close()
    assert used(conn, "acme", "api_calls") == 10


def test_concurrent_same_key_for_a_brand_new_customer(
    connections: Callable[..., list[psycopg.Connection]], conn: psycopg.Connection
) -> None:
    results = run_together(
        connections(8), lambda i, c: check_and_increment(c, "fresh", "rolling", key="first")
    )
    assert Counter(r["reason"] for r in results) == {"ok": 1, "duplicate": 7}
    assert used(conn, "fresh", "rolling") == 1
    assert scalar(conn, "SELECT count(*) FROM skene.customers WHERE customer_id = 'fresh'") == 1


def test_blocked_call_does_not_keep_its_key(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "api_calls", 100)
    blocked = check_and_increment(conn, "acme", "api_calls", key="late")
    assert blocked == decision(False, "limit_reached", "api_calls", "free", 100, 100, 0, APRIL)
    assert scalar(conn, "SELECT count(*) FROM skene.idempotency_keys") == 0
    # retried once there is room: counted, not a duplicate of the block
    conn.execute("SELECT skene.set_plan('acme', 'pro')")
    assert check_and_increment(conn, "acme", "api_calls", key="late") == decision(
        True, "ok", "api_calls", "pro", 101, None, None, APRIL
    )
    # not_in_plan keeps no key either
    assert check_and_increment(conn, "other", "sso", key="s")["reason"] == "not_in_plan"
    assert (
        scalar(conn, "SELECT count(*) FROM skene.idempotency_keys WHERE idempotency_key = 's'") == 0
    )


def test_keys_expire_with_their_period(conn: psycopg.Connection) -> None:
    set_now(conn, "2026-03-31 23:00:00")
    check_and_increment(conn, "acme", "api_calls", key="m")  # month: until 1 April
    check_and_increment(conn, "acme", "rolling", key="r")  # 30d: until 30 April
    check_and_increment(conn, "acme", "seats", key="l")  # lifetime: forever
    assert dict(
        conn.execute("SELECT idempotency_key, expires_at FROM skene.idempotency_keys").fetchall()
    ) == {"m": APRIL, "r": utc("2026-04-30 00:00:00"), "l": None}
    assert scalar(conn, "SELECT skene.prune()") == 0

    set_now(conn, "2026-04-01 00:00:00")
    # an expired key is free again, even before prune() has run
    assert check_and_increment(conn, "acme", "api_calls", key="m") == decision(
        True, "ok", "api_calls", "free", 1, 100, 99, utc("2026-05-01 00:00:00")
    )
    assert check_and_increment(conn, "acme", "rolling", key="r")["reason"] == "duplicate"
    assert check_and_increment(conn, "acme", "seats", key="l")["reason"] == "duplicate"
    assert scalar(conn, "SELECT skene.prune()") == 0  # "m" was renewed until 1 May

    set_now(conn, "2026-05-01 00:00:00")
    assert scalar(conn, "SELECT skene.prune()") == 2  # "m" and "r"
    assert [r[0] for r in conn.execute("SELECT idempotency_key FROM skene.idempotency_keys")] == [
        "l"
    ]
    set_now(conn, "2099-01-01 00:00:00")
    assert scalar(conn, "SELECT skene.prune()") == 0


def test_key_in_a_rolled_back_transaction_is_not_kept(
    connect: Callable[..., psycopg.Connection], conn: psycopg.Connection
) -> None:
    tx = connect(autocommit=False)
    set_now(tx, "2026-03-10 12:00:00")
    check_and_increment(tx, "acme", "api_calls", key="gone")
    tx.rollback()
    set_now(conn, "2026-03-10 12:00:00")
    assert check_and_increment(conn, "acme", "api_calls", key="gone")["reason"] == "ok"
