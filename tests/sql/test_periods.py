"""Periods: calendar rollover in UTC whatever the session's TimeZone, rolling windows
that slide, lifetime, billing cycles, and plan changes mid-period. Time is moved with
the skene.now setting, never by sleeping."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from tests.sql.helpers import check, check_and_increment, decision, scalar, set_now, used, utc

pytestmark = pytest.mark.usefixtures("catalogue")

# A session TimeZone far from UTC on either side: a calendar computed in local time
# instead of UTC would put the boundaries 14 or 11 hours off.
ZONES = ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"]


def use_up(conn: psycopg.Connection, customer: str, feature: str, limit: int) -> None:
    for _ in range(limit):
        assert check_and_increment(conn, customer, feature)["allowed"]
    assert check_and_increment(conn, customer, feature)["reason"] == "limit_reached"


ROLLOVERS = [  # feature, last moment of a period, start and end of the next one
    ("daily", "2026-03-31 23:59:59", "2026-04-01 00:00:00", "2026-04-02 00:00:00"),
    # 2026-03-29 is a Sunday: weeks start on Monday
    ("weekly", "2026-03-29 23:59:59", "2026-03-30 00:00:00", "2026-04-06 00:00:00"),
    ("api_calls", "2026-03-31 23:59:59", "2026-04-01 00:00:00", "2026-05-01 00:00:00"),
    # billing_cycle with no billing period known yet counts by calendar month
    ("billed", "2026-03-31 23:59:59", "2026-04-01 00:00:00", "2026-05-01 00:00:00"),
    ("api_calls", "2026-12-31 23:59:59", "2027-01-01 00:00:00", "2027-02-01 00:00:00"),
]


@pytest.mark.parametrize("zone", ZONES)
def test_calendar_rollover_is_utc(conn: psycopg.Connection, zone: str) -> None:
    conn.execute(f"SET TimeZone = '{zone}'")
    for n, (feature, last_moment, next_start, next_end) in enumerate(ROLLOVERS):
        customer = f"c{n}"
        limit = scalar(
            conn,
            "SELECT usage_limit FROM skene.feature_limits WHERE feature = %s AND plan = 'free'",
            (feature,),
        )
        set_now(conn, last_moment)
        use_up(conn, customer, feature, limit)
        assert check_and_increment(conn, customer, feature) == decision(
            False, "limit_reached", feature, "free", limit, limit, 0, utc(next_start)
        )
        set_now(conn, next_start)
        assert check(conn, customer, feature) == decision(
            True, "ok", feature, "free", 0, limit, limit, utc(next_end)
        )
        assert check_and_increment(conn, customer, feature) == decision(
            True, "ok", feature, "free", 1, limit, limit - 1, utc(next_end)
        )
        assert (
            scalar(conn, "SELECT count(*) FROM skene.usage WHERE customer_id = %s", (customer,))
            == 1
        )

    # 10:00 UTC on 31 March is already 1 April in Kiritimati: still March for skene
    set_now(conn, "2026-03-31 10:00:00")
    use_up(conn, "late", "daily", 5)
    assert check_and_increment(conn, "late", "api_calls")["resets_at"] == utc("2026-04-01 00:00:00")
    set_now(conn, "2026-03-31 23:00:00")  # 1 April 13:00 in Kiritimati
    assert check_and_increment(conn, "late", "daily")["reason"] == "limit_reached"


def test_rolling_window_slides(conn: psycopg.Connection) -> None:
    """30d: what was counted on day 1 frees up at the start of day 31."""
    set_now(conn, "2026-01-01 09:00:00")  # day 1
    assert check_and_increment(conn, "acme", "rolling", 60) == decision(
        True, "ok", "rolling", "free", 60, 100, 40, utc("2026-01-31 00:00:00")
    )
    set_now(conn, "2026-01-10 15:00:00")  # day 10
    assert check_and_increment(conn, "acme", "rolling", 40) == decision(
        True, "ok", "rolling", "free", 100, 100, 0, utc("2026-01-31 00:00:00")
    )
    assert check_and_increment(conn, "acme", "rolling") == decision(
        False, "limit_reached", "rolling", "free", 100, 100, 0, utc("2026-01-31 00:00:00")
    )

    set_now(conn, "2026-01-30 23:59:59")  # day 30: day 1 still in the window
    assert check_and_increment(conn, "acme", "rolling") == decision(
        False, "limit_reached", "rolling", "free", 100, 100, 0, utc("2026-01-31 00:00:00")
    )

    set_now(conn, "2026-01-31 00:00:00")  # day 31: the 60 of day 1 are free again
    assert check(conn, "acme", "rolling") == decision(
        True, "ok", "rolling", "free", 40, 100, 60, utc("2026-02-09 00:00:00")
    )
    assert check_and_increment(conn, "acme", "rolling", 60) == decision(
        True, "ok", "rolling", "free", 100, 100, 0, utc("2026-02-09 00:00:00")
    )
    assert check_and_increment(conn, "acme", "rolling") == decision(
        False, "limit_reached", "rolling", "free", 100, 100, 0, utc("2026-02-09 00:00:00")
    )

    set_now(conn, "2026-02-09 00:00:00")  # day 40: the 40 of day 10 leave
    assert check_and_increment(conn, "acme", "rolling", 40) == decision(
        True, "ok", "rolling", "free", 100, 100, 0, utc("2026-03-02 00:00:00")
    )

    set_now(conn, "2026-06-01 12:00:00")  # long idle: the whole window is empty
    assert check(conn, "acme", "rolling", 100) == decision(
        True, "ok", "rolling", "free", 0, 100, 100, utc("2026-07-01 00:00:00")
    )
    assert check_and_increment(conn, "acme", "rolling", 100) == decision(
        True, "ok", "rolling", "free", 100, 100, 0, utc("2026-07-01 00:00:00")
    )
    buckets, today = conn.execute(
        "SELECT buckets, day_used FROM skene.usage WHERE customer_id = 'acme'"
    ).fetchone() or (None, None)
    assert len(buckets) == 30 and sum(buckets) + today == 100


def test_rolling_window_day_by_day(conn: psycopg.Connection) -> None:
    """One unit a day for 45 days against a limit of 100: the count is always the
    units of the last 30 days, and resets_at is when the oldest of them leaves."""
    first = utc("2026-01-01 06:00:00")
    for day in range(45):
        set_now(conn, str((first + timedelta(days=day)).replace(tzinfo=None)))
        got = check_and_increment(conn, "acme", "rolling")
        oldest = max(0, day - 29)  # the oldest day still in the window
        assert (got["allowed"], got["used"], got["resets_at"]) == (
            True,
            day - oldest + 1,
            utc("2026-01-31 00:00:00") + timedelta(days=oldest),
        ), day


def test_lifetime_never_resets(conn: psycopg.Connection) -> None:
    set_now(conn, "2026-01-01 00:00:00")
    for n in (1, 2, 3):
        assert check_and_increment(conn, "acme", "seats") == decision(
            True, "ok", "seats", "free", n, 3, 3 - n, None
        )
    assert check_and_increment(conn, "acme", "seats") == decision(
        False, "limit_reached", "seats", "free", 3, 3, 0, None
    )
    set_now(conn, "2031-07-15 00:00:00")
    assert check_and_increment(conn, "acme", "seats") == decision(
        False, "limit_reached", "seats", "free", 3, 3, 0, None
    )
    assert check(conn, "acme", "seats") == decision(
        False, "limit_reached", "seats", "free", 3, 3, 0, None
    )
    conn.execute("SELECT skene.set_plan('acme', 'pro')")
    assert check_and_increment(conn, "acme", "seats") == decision(
        True, "ok", "seats", "pro", 4, None, None, None
    )


def test_billing_cycle_anchored_at_the_billing_period(conn: psycopg.Connection) -> None:
    set_now(conn, "2026-03-20 08:00:00")
    conn.execute(
        "SELECT skene.set_billing_period('acme', '2026-03-15 10:00+00', '2026-04-15 10:00+00')"
    )
    use_up(conn, "acme", "billed", 5)
    assert check_and_increment(conn, "acme", "billed") == decision(
        False, "limit_reached", "billed", "free", 5, 5, 0, utc("2026-04-15 10:00:00")
    )
    set_now(conn, "2026-04-01 00:00:00")  # a calendar month would reset here; the cycle does not
    assert check_and_increment(conn, "acme", "billed")["reason"] == "limit_reached"
    set_now(conn, "2026-04-15 09:59:59")
    assert check_and_increment(conn, "acme", "billed")["reason"] == "limit_reached"
    # the biller has not reported the next period yet: assume a monthly cycle
    set_now(conn, "2026-04-15 10:00:00")
    assert check_and_increment(conn, "acme", "billed") == decision(
        True, "ok", "billed", "free", 1, 5, 4, utc("2026-05-15 10:00:00")
    )
    # the biller reports the new period
    conn.execute(
        "SELECT skene.set_billing_period('acme', '2026-04-15 10:00+00', '2026-05-15 10:00+00')"
    )
    assert check_and_increment(conn, "acme", "billed") == decision(
        True, "ok", "billed", "free", 2, 5, 3, utc("2026-05-15 10:00:00")
    )
    # other customers, with no billing period, count by calendar month
    assert check_and_increment(conn, "other", "billed") == decision(
        True, "ok", "billed", "free", 1, 5, 4, utc("2026-05-01 00:00:00")
    )


def test_billing_cycle_fallback_from_a_month_end_anchor(conn: psycopg.Connection) -> None:
    """Anchored on 31 January, with no later period reported: monthly periods from the
    anchor (31 Jan + 1 month = 28 Feb), each containing the current time."""
    conn.execute(
        "SELECT skene.set_billing_period('acme', '2026-01-31 00:00+00', '2026-02-01 00:00+00')"
    )
    for at, start, end in [
        ("2026-02-27 12:00:00", "2026-01-31 00:00:00", "2026-02-28 00:00:00"),
        ("2026-02-28 12:00:00", "2026-02-28 00:00:00", "2026-03-31 00:00:00"),
        ("2026-03-31 12:00:00", "2026-03-31 00:00:00", "2026-04-30 00:00:00"),
        ("2026-04-30 12:00:00", "2026-04-30 00:00:00", "2026-05-31 00:00:00"),
    ]:
        set_now(conn, at)
        assert check_and_increment(conn, "acme", "billed")["resets_at"] == utc(end), at
        assert conn.execute(
            "SELECT period_start, period_end FROM skene.period_bounds('billing_cycle', %s, "
            "'2026-01-31 00:00+00', '2026-02-01 00:00+00')",
            (utc(at),),
        ).fetchone() == (utc(start), utc(end))


def test_billing_cycle_fallback_always_contains_the_time(conn: psycopg.Connection) -> None:
    """Every anchor from 25 Jan to 31 Jan 2024 (a leap year) at six-hour steps for two
    years: the assumed period starts at or before the time and ends after it."""
    bad = conn.execute("""
        SELECT anchor, at, b.period_start, b.period_end
          FROM generate_series('2024-01-25 00:00+00'::timestamptz, '2024-01-31 18:00+00',
                               interval '6 hours') anchor,
               generate_series('2024-02-01 00:00+00'::timestamptz, '2026-02-01 00:00+00',
                               interval '6 hours') at,
               skene.period_bounds('billing_cycle', at, anchor, anchor + interval '1 day') b
         WHERE NOT (b.period_start <= at AND at < b.period_end)
         LIMIT 5""").fetchall()
    assert bad == []


def test_free_to_paid_unblocks_at_once_and_back_blocks(conn: psycopg.Connection) -> None:
    april = utc("2026-04-01 00:00:00")
    use_up(conn, "acme", "api_calls", 100)
    conn.execute("SELECT skene.set_plan('acme', 'pro', 'stripe', 'sub_123')")
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        True, "ok", "api_calls", "pro", 101, None, None, april
    )
    for _ in range(49):
        check_and_increment(conn, "acme", "api_calls")
    conn.execute("SELECT skene.set_plan('acme', 'free', 'stripe', 'sub_123')")
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        False, "limit_reached", "api_calls", "free", 150, 100, 0, april
    )
    assert used(conn, "acme", "api_calls") == 150
    # to a plan with a higher limit that the usage is under
    conn.execute("SELECT skene.set_plan('acme', 'team')")
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        True, "ok", "api_calls", "team", 151, 1000, 849, april
    )
    assert conn.execute(
        "SELECT from_plan, to_plan, source, external_ref FROM skene.plan_changes "
        "WHERE customer_id = 'acme' ORDER BY id"
    ).fetchall() == [
        ("free", "pro", "stripe", "sub_123"),
        ("pro", "free", "stripe", "sub_123"),
        ("free", "team", "manual", None),
    ]


def test_set_plan_to_the_same_plan_changes_nothing(conn: psycopg.Connection) -> None:
    conn.execute("SELECT skene.set_plan('acme', 'pro')")
    conn.execute("SELECT skene.set_plan('acme', 'pro')")
    assert scalar(conn, "SELECT count(*) FROM skene.plan_changes") == 1


def test_plan_change_on_a_rolling_window_keeps_the_window(conn: psycopg.Connection) -> None:
    set_now(conn, "2026-01-01 09:00:00")
    check_and_increment(conn, "acme", "rolling", 100)
    conn.execute("SELECT skene.set_plan('acme', 'pro')")
    set_now(conn, "2026-01-05 09:00:00")
    assert check_and_increment(conn, "acme", "rolling", 50) == decision(
        True, "ok", "rolling", "pro", 150, None, None, utc("2026-01-31 00:00:00")
    )
    conn.execute("SELECT skene.set_plan('acme', 'free')")
    assert check_and_increment(conn, "acme", "rolling") == decision(
        False, "limit_reached", "rolling", "free", 150, 100, 0, utc("2026-01-31 00:00:00")
    )
    set_now(conn, "2026-01-31 00:00:00")  # the 100 of 1 January leave; 50 remain
    assert check_and_increment(conn, "acme", "rolling") == decision(
        True, "ok", "rolling", "free", 51, 100, 49, utc("2026-02-04 00:00:00")
    )
