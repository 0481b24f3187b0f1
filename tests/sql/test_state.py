"""O(1) state: a customer's history never grows the rows a call has to read."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from tests.sql.helpers import scalar, set_now, utc

pytestmark = pytest.mark.usefixtures("catalogue")


def calls(conn: psycopg.Connection, customer: str, feature: str, n: int) -> None:
    with conn.pipeline():
        for _ in range(n):
            conn.execute(
                "SELECT allowed FROM skene.check_and_increment(%s, %s)", (customer, feature)
            )


def rows(conn: psycopg.Connection, table: str, customer: str, feature: str) -> int:
    return scalar(
        conn,
        f"SELECT count(*) FROM skene.{table} WHERE customer_id = %s AND feature = %s",
        (customer, feature),
    )


@pytest.mark.parametrize("feature", ["api_calls", "rolling", "seats"])
def test_a_thousand_calls_leave_one_counter_row(conn: psycopg.Connection, feature: str) -> None:
    conn.execute("SELECT skene.set_plan('big', 'pro')")
    calls(conn, "big", feature, 1000)
    assert rows(conn, "usage", "big", feature) == 1
    assert (
        scalar(
            conn,
            "SELECT used FROM skene.usage WHERE customer_id = 'big' AND feature = %s",
            (feature,),
        )
        == 1000
    )
    # a blocked customer: its blocks add nothing but one limit hit
    calls(conn, "acme", feature, 1000)
    assert rows(conn, "usage", "acme", feature) == 1
    assert rows(conn, "limit_hits", "acme", feature) == 1


def test_one_row_across_many_periods(conn: psycopg.Connection) -> None:
    start = utc("2026-01-01 08:00:00").replace(tzinfo=None)
    for day in range(0, 100, 3):  # 34 days over 100: new days, new months, a full window
        set_now(conn, str(start + timedelta(days=day)))
        for feature in ("daily", "api_calls", "rolling"):
            calls(conn, "acme", feature, 30)
    assert scalar(conn, "SELECT count(*) FROM skene.usage") == 3
    assert (
        scalar(conn, "SELECT cardinality(buckets) FROM skene.usage WHERE feature = 'rolling'") == 30
    )
