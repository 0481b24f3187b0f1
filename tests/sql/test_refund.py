"""skene.refund: a counted call's units come back at most once, only what was counted,
only while they still count, and never below zero."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from tests.sql.helpers import check, check_and_increment, run_together, set_now, used, utc

pytestmark = pytest.mark.usefixtures("catalogue")

APRIL = utc("2026-04-01 00:00:00")


def refund(
    conn: psycopg.Connection, customer: str, feature: str, amount: int | None, key: str | None
) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM skene.refund(%s, %s, %s, %s)", (customer, feature, amount, key))
        row = cur.fetchone()
    assert row is not None
    return row


def test_gives_back_what_the_key_counted_once(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "api_calls", 5)
    check_and_increment(conn, "acme", "api_calls", 3, key="req-1")
    assert used(conn, "acme", "api_calls") == 8
    assert refund(conn, "acme", "api_calls", None, "req-1") == {
        "refunded": 3,
        "reason": "refunded",
        "feature": "api_calls",
        "plan": "free",
        "used": 5,
        "usage_limit": 100,
        "remaining": 95,
        "resets_at": APRIL,
    }
    again = refund(conn, "acme", "api_calls", None, "req-1")
    assert (again["refunded"], again["reason"], again["used"]) == (0, "not_counted", 5)
    assert used(conn, "acme", "api_calls") == 5


def test_refunds_no_more_than_was_counted(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "api_calls", 3, key="a")
    assert refund(conn, "acme", "api_calls", 10, "a")["refunded"] == 3
    check_and_increment(conn, "acme", "api_calls", 3, key="b")
    part = refund(conn, "acme", "api_calls", 1, "b")
    assert (part["refunded"], part["used"]) == (1, 2)
    # at most once: the rest of b is not refundable afterwards
    assert refund(conn, "acme", "api_calls", None, "b")["reason"] == "not_counted"
    assert used(conn, "acme", "api_calls") == 2


def test_a_blocked_or_unknown_key_refunds_nothing(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "api_calls", 100)
    assert not check_and_increment(conn, "acme", "api_calls", key="late")["allowed"]
    blocked = refund(conn, "acme", "api_calls", None, "late")
    assert (blocked["refunded"], blocked["reason"], blocked["used"]) == (0, "not_counted", 100)
    assert refund(conn, "acme", "api_calls", None, "never-used")["refunded"] == 0
    assert refund(conn, "nobody", "api_calls", None, "x")["reason"] == "not_counted"
    assert used(conn, "acme", "api_calls") == 100


def test_a_refund_frees_room_under_the_limit(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "api_calls", 99)
    check_and_increment(conn, "acme", "api_calls", key="last")
    assert not check_and_increment(conn, "acme", "api_calls")["allowed"]
    assert refund(conn, "acme", "api_calls", None, "last")["remaining"] == 1
    assert check_and_increment(conn, "acme", "api_calls")["allowed"]  # the fast path, too


def test_the_refunded_key_counts_again_when_retried(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "api_calls", key="req")
    refund(conn, "acme", "api_calls", None, "req")
    retried = check_and_increment(conn, "acme", "api_calls", key="req")
    assert (retried["reason"], retried["used"]) == ("ok", 1)  # not a free 'duplicate'


def test_a_duplicate_does_not_double_the_refund(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "api_calls", 4, key="req")
    check_and_increment(conn, "acme", "api_calls", 4, key="req")  # duplicate: counted once
    assert refund(conn, "acme", "api_calls", None, "req")["refunded"] == 4
    assert used(conn, "acme", "api_calls") == 0


def test_after_the_period_ended_nothing_is_refunded(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "api_calls", 3, key="march")
    set_now(conn, "2026-04-02 00:00:00")
    check_and_increment(conn, "acme", "api_calls", 2)  # April's usage
    gone = refund(conn, "acme", "api_calls", None, "march")
    assert (gone["refunded"], gone["reason"], gone["used"]) == (0, "expired", 2)
    assert used(conn, "acme", "api_calls") == 2


def test_rolling_window_refund_takes_from_the_day_it_counted(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "rolling", 4, key="day1")
    set_now(conn, "2026-03-11 12:00:00")
    check_and_increment(conn, "acme", "rolling", 6, key="day2")  # day1 moved into the ring
    assert refund(conn, "acme", "rolling", None, "day1")["used"] == 6
    assert refund(conn, "acme", "rolling", None, "day2")["used"] == 0
    assert used(conn, "acme", "rolling") == 0
    # the window still slides right: new usage on later days counts from zero
    set_now(conn, "2026-03-12 12:00:00")
    assert check_and_increment(conn, "acme", "rolling", 5)["used"] == 5
    buckets = conn.execute(
        "SELECT buckets FROM skene.usage WHERE customer_id = 'acme' AND feature = 'rolling'"
    ).fetchone()
    assert buckets is not None and sum(buckets[0]) == 0  # nothing below zero in the ring


def test_rolling_window_usage_that_left_the_window_is_not_refunded(
    conn: psycopg.Connection,
) -> None:
    check_and_increment(conn, "acme", "rolling", 4, key="old")
    set_now(conn, "2026-04-10 00:00:00")  # 30 days on: day 1 has left the window
    check_and_increment(conn, "acme", "rolling", 1)
    late = refund(conn, "acme", "rolling", None, "old")
    assert (late["refunded"], late["reason"], late["used"]) == (0, "expired", 1)


def test_lifetime_and_soft_limits(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "seats", 2, key="seat")
    assert refund(conn, "acme", "seats", None, "seat")["refunded"] == 2
    check_and_increment(conn, "acme", "emails", 12, key="burst")  # past the soft limit of 10
    after = refund(conn, "acme", "emails", None, "burst")
    assert (after["refunded"], after["used"], after["remaining"]) == (12, 0, 10)


def test_metered_units_not_yet_reported_are_taken_back(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE skene.features SET meter = 'api_requests' WHERE feature = 'api_calls'")
    check_and_increment(conn, "acme", "api_calls", 5)
    check_and_increment(conn, "acme", "api_calls", 3, key="req")
    quantity = "SELECT quantity FROM skene.meter_usage WHERE customer_id = 'acme'"
    assert conn.execute(quantity).fetchone() == (8,)
    refund(conn, "acme", "api_calls", None, "req")
    assert conn.execute(quantity).fetchone() == (5,)
    # units reported to the biller already stay billed
    check_and_increment(conn, "acme", "api_calls", 2, key="late")
    conn.execute("UPDATE skene.meter_usage SET reported = 7 WHERE customer_id = 'acme'")
    assert refund(conn, "acme", "api_calls", None, "late")["refunded"] == 2
    assert conn.execute(quantity).fetchone() == (7,)


def test_concurrent_refunds_of_one_key_give_back_once(
    conn: psycopg.Connection, connections: Callable[..., list[psycopg.Connection]]
) -> None:
    check_and_increment(conn, "acme", "api_calls", 10)
    check_and_increment(conn, "acme", "api_calls", 5, key="req")
    results = run_together(
        connections(8), lambda _, c: refund(c, "acme", "api_calls", None, "req")["refunded"]
    )
    assert sorted(results) == [0] * 7 + [5]
    assert used(conn, "acme", "api_calls") == 10


def test_bad_input_is_22023(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "acme", "api_calls", key="k")
    with pytest.raises(errors.InvalidParameterValue, match="needs the idempotency key"):
        refund(conn, "acme", "api_calls", None, None)
    with pytest.raises(errors.InvalidParameterValue, match="unknown feature"):
        refund(conn, "acme", "api_call", None, "k")
    with pytest.raises(errors.InvalidParameterValue):
        refund(conn, "acme", "api_calls", 0, "k")
    assert check(conn, "acme", "api_calls")["used"] == 1  # nothing refunded by a bad call
