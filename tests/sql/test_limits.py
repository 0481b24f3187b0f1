"""Exact limits: the decision of every call, field by field."""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.helpers import check, check_and_increment, decision, scalar, used, utc

pytestmark = pytest.mark.usefixtures("catalogue")

APRIL = utc("2026-04-01 00:00:00")  # end of the current (March) period at START


def test_100_allowed_then_blocked(conn: psycopg.Connection) -> None:
    for n in range(1, 101):
        assert check_and_increment(conn, "acme", "api_calls") == decision(
            True, "ok", "api_calls", "free", n, 100, 100 - n, APRIL
        )
    for _ in range(3):
        assert check_and_increment(conn, "acme", "api_calls") == decision(
            False, "limit_reached", "api_calls", "free", 100, 100, 0, APRIL
        )
    assert used(conn, "acme", "api_calls") == 100


def test_new_customer_is_registered_on_the_default_plan(conn: psycopg.Connection) -> None:
    check_and_increment(conn, "newbie", "api_calls")
    assert conn.execute(
        "SELECT plan, plan_source FROM skene.customers WHERE customer_id = 'newbie'"
    ).fetchall() == [("free", "default")]


def test_unlimited_plan_has_no_limit_and_no_remaining(conn: psycopg.Connection) -> None:
    conn.execute("SELECT skene.set_plan('big', 'pro')")
    for n in range(1, 151):
        assert check_and_increment(conn, "big", "api_calls") == decision(
            True, "ok", "api_calls", "pro", n, None, None, APRIL
        )
    assert check_and_increment(conn, "big", "api_calls", 1_000_000) == decision(
        True, "ok", "api_calls", "pro", 1_000_150, None, None, APRIL
    )
    assert check(conn, "big", "api_calls", 10**12) == decision(
        True, "ok", "api_calls", "pro", 1_000_150, None, None, APRIL
    )


def test_limit_zero_is_not_in_plan(conn: psycopg.Connection) -> None:
    blocked = decision(False, "not_in_plan", "sso", "free", 0, 0, 0, APRIL)
    assert check_and_increment(conn, "acme", "sso") == blocked
    assert check_and_increment(conn, "acme", "sso") == blocked
    assert check(conn, "acme", "sso") == blocked
    assert used(conn, "acme", "sso") is None  # nothing counted
    assert conn.execute(
        "SELECT reason, plan, used, usage_limit, requested FROM skene.limit_hits "
        "WHERE customer_id = 'acme'"
    ).fetchall() == [("not_in_plan", "free", 0, 0, 1)]


def test_plan_missing_from_limits_is_not_in_plan(conn: psycopg.Connection) -> None:
    assert check_and_increment(conn, "acme", "audit_log") == decision(
        False, "not_in_plan", "audit_log", "free", 0, 0, 0, APRIL
    )
    conn.execute("SELECT skene.set_plan('acme', 'team')")
    assert check_and_increment(conn, "acme", "audit_log") == decision(
        True, "ok", "audit_log", "team", 1, 50, 49, APRIL
    )


def test_amounts_above_one_and_a_call_that_would_cross(conn: psycopg.Connection) -> None:
    for n in (1, 2, 3):
        assert check_and_increment(conn, "acme", "api_calls", 30) == decision(
            True, "ok", "api_calls", "free", 30 * n, 100, 100 - 30 * n, APRIL
        )
    # 90 + 20 would cross 100: blocked, and nothing of it is counted
    assert check_and_increment(conn, "acme", "api_calls", 20) == decision(
        False, "limit_reached", "api_calls", "free", 90, 100, 10, APRIL
    )
    assert used(conn, "acme", "api_calls") == 90
    assert check_and_increment(conn, "acme", "api_calls", 10) == decision(
        True, "ok", "api_calls", "free", 100, 100, 0, APRIL
    )
    assert check_and_increment(conn, "acme", "api_calls", 1) == decision(
        False, "limit_reached", "api_calls", "free", 100, 100, 0, APRIL
    )
    # more than the whole limit in one call, for a fresh customer
    assert check_and_increment(conn, "other", "api_calls", 101) == decision(
        False, "limit_reached", "api_calls", "free", 0, 100, 100, APRIL
    )
    assert used(conn, "other", "api_calls") == 0


def test_soft_limit_allows_and_flags(conn: psycopg.Connection) -> None:
    for n in range(1, 11):
        assert check_and_increment(conn, "acme", "emails") == decision(
            True, "ok", "emails", "free", n, 10, 10 - n, APRIL
        )
    assert check_and_increment(conn, "acme", "emails") == decision(
        True, "over_soft_limit", "emails", "free", 11, 10, 0, APRIL
    )
    assert check_and_increment(conn, "acme", "emails", 5) == decision(
        True, "over_soft_limit", "emails", "free", 16, 10, 0, APRIL
    )
    assert check(conn, "acme", "emails") == decision(
        True, "over_soft_limit", "emails", "free", 16, 10, 0, APRIL
    )
    # crossing in one call is flagged too
    assert check_and_increment(conn, "other", "emails", 12) == decision(
        True, "over_soft_limit", "emails", "free", 12, 10, 0, APRIL
    )
    # a soft limit never blocks, so it records no hit and queues no prompt
    assert scalar(conn, "SELECT count(*) FROM skene.limit_hits") == 0


def test_per_customer_override(conn: psycopg.Connection) -> None:
    for _ in range(5):
        check_and_increment(conn, "acme", "api_calls")
    conn.execute("SELECT skene.set_limit_override('acme', 'api_calls', 6)")
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        True, "ok", "api_calls", "free", 6, 6, 0, APRIL
    )
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        False, "limit_reached", "api_calls", "free", 6, 6, 0, APRIL
    )
    # other customers on the plan keep the plan's limit
    assert check_and_increment(conn, "other", "api_calls") == decision(
        True, "ok", "api_calls", "free", 1, 100, 99, APRIL
    )

    conn.execute("SELECT skene.set_limit_override('acme', 'api_calls', NULL)")  # unlimited
    assert check_and_increment(conn, "acme", "api_calls", 500) == decision(
        True, "ok", "api_calls", "free", 506, None, None, APRIL
    )

    conn.execute("SELECT skene.set_limit_override('acme', 'api_calls', 0)")  # switched off
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        False, "not_in_plan", "api_calls", "free", 506, 0, 0, APRIL
    )

    assert scalar(conn, "SELECT skene.clear_limit_override('acme', 'api_calls')") is True
    assert scalar(conn, "SELECT skene.clear_limit_override('acme', 'api_calls')") is False
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        False, "limit_reached", "api_calls", "free", 506, 100, 0, APRIL
    )


def test_override_lowered_below_usage_blocks_at_once(conn: psycopg.Connection) -> None:
    """The counter caches the limit for its fast path: an override must reach it."""
    for _ in range(10):
        check_and_increment(conn, "acme", "api_calls")
    conn.execute("SELECT skene.set_limit_override('acme', 'api_calls', 8)")
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        False, "limit_reached", "api_calls", "free", 10, 8, 0, APRIL
    )


def test_override_on_a_feature_not_in_plan(conn: psycopg.Connection) -> None:
    conn.execute("SELECT skene.set_limit_override('acme', 'sso', 2)")
    assert check_and_increment(conn, "acme", "sso") == decision(
        True, "ok", "sso", "free", 1, 2, 1, APRIL
    )


def test_plan_limit_changed_in_catalogue_applies_at_once(conn: psycopg.Connection) -> None:
    for _ in range(60):
        check_and_increment(conn, "acme", "api_calls")
    conn.execute(
        "UPDATE skene.feature_limits SET usage_limit = 50 "
        "WHERE feature = 'api_calls' AND plan = 'free'"
    )
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        False, "limit_reached", "api_calls", "free", 60, 50, 0, APRIL
    )
    conn.execute(
        "UPDATE skene.feature_limits SET usage_limit = 200 "
        "WHERE feature = 'api_calls' AND plan = 'free'"
    )
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        True, "ok", "api_calls", "free", 61, 200, 139, APRIL
    )
    conn.execute("UPDATE skene.features SET soft = true WHERE feature = 'api_calls'")
    conn.execute(
        "UPDATE skene.feature_limits SET usage_limit = 10 "
        "WHERE feature = 'api_calls' AND plan = 'free'"
    )
    assert check_and_increment(conn, "acme", "api_calls") == decision(
        True, "over_soft_limit", "api_calls", "free", 62, 10, 0, APRIL
    )


def test_check_is_read_only(conn: psycopg.Connection) -> None:
    def state() -> tuple[int, ...]:
        return tuple(
            scalar(conn, f"SELECT count(*) FROM skene.{t}")
            for t in (
                "customers",
                "usage",
                "limit_hits",
                "jobs",
                "idempotency_keys",
                "plan_changes",
            )
        )

    before = state()
    assert check(conn, "ghost", "api_calls") == decision(
        True, "ok", "api_calls", "free", 0, 100, 100, APRIL
    )
    assert check(conn, "ghost", "api_calls", 101) == decision(
        False, "limit_reached", "api_calls", "free", 0, 100, 100, APRIL
    )
    assert check(conn, "ghost", "sso") == decision(
        False, "not_in_plan", "sso", "free", 0, 0, 0, APRIL
    )
    assert state() == before == (0, 0, 0, 0, 0, 0)

    for _ in range(100):
        check_and_increment(conn, "acme", "api_calls")
    before = state()
    for _ in range(3):
        assert check(conn, "acme", "api_calls") == decision(
            False, "limit_reached", "api_calls", "free", 100, 100, 0, APRIL
        )
    assert state() == before
    assert scalar(conn, "SELECT count(*) FROM skene.limit_hits") == 0  # check records no hit


def test_check_agrees_with_check_and_increment(conn: psycopg.Connection) -> None:
    conn.execute("SELECT skene.set_plan('big', 'pro')")
    calls = (
        [("acme", "api_calls", 1)] * 3
        + [
            ("acme", "api_calls", 50),
            ("acme", "api_calls", 47),
            ("acme", "api_calls", 1),
            ("acme", "api_calls", 1),
        ]
        + [("acme", "emails", 6)] * 3
        + [("acme", "sso", 1), ("acme", "audit_log", 1)]
        + [("big", "api_calls", 10**6), ("big", "sso", 10), ("big", "sso", 1)]
        + [
            ("acme", "rolling", 60),
            ("acme", "rolling", 41),
            ("acme", "rolling", 40),
            ("acme", "seats", 3),
            ("acme", "seats", 1),
            ("acme", "daily", 6),
        ]
    )
    for customer, feature, amount in calls:
        asked = check(conn, customer, feature, amount)
        done = check_and_increment(conn, customer, feature, amount)
        assert (
            asked["allowed"],
            asked["reason"],
            asked["plan"],
            asked["usage_limit"],
            asked["resets_at"],
        ) == (
            done["allowed"],
            done["reason"],
            done["plan"],
            done["usage_limit"],
            done["resets_at"],
        ), (customer, feature, amount)
        # check reports usage before the call; check_and_increment after it, if counted
        assert done["used"] == asked["used"] + (amount if done["allowed"] else 0)
        after = check(conn, customer, feature, 1)
        assert after["used"] == done["used"]
