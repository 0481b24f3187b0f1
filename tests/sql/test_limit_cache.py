"""The effective limit cached on each counter row (the gate's fast path) must follow
every change to plans, limits, overrides and billing periods on the very next call."""

from __future__ import annotations

import psycopg
import pytest


@pytest.fixture
def gate(conn: psycopg.Connection, catalogue: None) -> psycopg.Connection:
    # Plans free (default) and pro come from tests/sql/conftest.py's catalogue.
    conn.execute("""
        INSERT INTO skene.features (feature, period) VALUES ('exports', 'month'), ('calls', '30d');
        INSERT INTO skene.feature_limits VALUES
            ('exports', 'free', 3), ('exports', 'pro', 10),
            ('calls', 'free', 3), ('calls', 'pro', NULL);
        SET skene.now = '2026-05-10 12:00+00';
    """)
    return conn


def call(conn: psycopg.Connection, feature: str, customer: str = "cus_1") -> tuple:
    row = conn.execute(
        "SELECT allowed, reason, used, usage_limit FROM skene.check_and_increment(%s, %s)",
        (customer, feature),
    ).fetchone()
    assert row is not None
    return row


def warm(conn: psycopg.Connection, feature: str, calls: int = 3) -> None:
    """Count up to the free limit so the row's cache is warm and the next call blocks."""
    for _ in range(calls):
        assert call(conn, feature)[0]
    assert call(conn, feature)[:2] == (False, "limit_reached")


@pytest.mark.parametrize("feature", ["exports", "calls"])
def test_set_plan_applies_on_the_next_call(gate: psycopg.Connection, feature: str) -> None:
    warm(gate, feature)
    gate.execute("SELECT skene.set_plan('cus_1', 'pro')")
    assert call(gate, feature)[:3] == (True, "ok", 4)
    gate.execute("SELECT skene.set_plan('cus_1', 'free')")
    assert call(gate, feature)[:3] == (False, "limit_reached", 4)


# Each test below lowers the limit while the cached one is still permissive, the
# direction in which a stale cache would let calls through.


def test_a_plan_changed_behind_the_gates_back_applies_too(gate: psycopg.Connection) -> None:
    gate.execute("SELECT skene.set_plan('cus_1', 'pro')")
    for _ in range(3):
        call(gate, "exports")  # cached limit: pro's 10
    gate.execute("UPDATE skene.customers SET plan = 'free' WHERE customer_id = 'cus_1'")
    assert call(gate, "exports") == (False, "limit_reached", 3, 3)


def test_changing_a_plans_limit_applies_to_its_customers(gate: psycopg.Connection) -> None:
    call(gate, "exports")
    call(gate, "exports")
    gate.execute(
        "UPDATE skene.feature_limits SET usage_limit = 2 "
        "WHERE feature = 'exports' AND plan = 'free'"
    )
    assert call(gate, "exports") == (False, "limit_reached", 2, 2)
    gate.execute(
        "UPDATE skene.feature_limits SET usage_limit = NULL "
        "WHERE feature = 'exports' AND plan = 'free'"
    )
    assert call(gate, "exports") == (True, "ok", 3, None)
    gate.execute("DELETE FROM skene.feature_limits WHERE feature = 'exports' AND plan = 'free'")
    assert call(gate, "exports")[:2] == (False, "not_in_plan")


def test_clearing_an_override_applies(gate: psycopg.Connection) -> None:
    gate.execute("SELECT skene.set_limit_override('cus_1', 'calls', 10)")
    for _ in range(4):
        assert call(gate, "calls")[0]  # cached limit: the override's 10
    gate.execute("SELECT skene.clear_limit_override('cus_1', 'calls')")
    assert call(gate, "calls") == (False, "limit_reached", 4, 3)


def test_lowering_an_override_applies(gate: psycopg.Connection) -> None:
    gate.execute("SELECT skene.set_limit_override('cus_1', 'calls', 10)")
    call(gate, "calls")
    gate.execute("SELECT skene.set_limit_override('cus_1', 'calls', 1)")
    assert call(gate, "calls") == (False, "limit_reached", 1, 1)


def test_turning_a_soft_limit_hard_applies(gate: psycopg.Connection) -> None:
    gate.execute("UPDATE skene.features SET soft = true WHERE feature = 'exports'")
    for _ in range(4):
        call(gate, "exports")
    assert call(gate, "exports") == (True, "over_soft_limit", 5, 3)
    gate.execute("UPDATE skene.features SET soft = false WHERE feature = 'exports'")
    assert call(gate, "exports") == (False, "limit_reached", 5, 3)


def test_a_plan_change_leaves_other_customers_cache_and_touches_no_counter(
    gate: psycopg.Connection,
) -> None:
    for _ in range(2):  # a new counter caches its limit from its second call on
        call(gate, "exports")
        call(gate, "exports", customer="cus_2")
    counters = gate.execute("SELECT customer_id, xmin::text FROM skene.usage ORDER BY 1").fetchall()
    versions = dict(gate.execute("SELECT customer_id, limits_version FROM skene.customers"))
    gate.execute("SELECT skene.set_plan('cus_1', 'pro')")
    # no counter row was written (an operator holding one could deadlock the app)
    assert gate.execute(
        "SELECT customer_id, xmin::text FROM skene.usage ORDER BY 1"
    ).fetchall() == (counters)
    after = dict(gate.execute("SELECT customer_id, limits_version FROM skene.customers"))
    assert after == {"cus_1": versions["cus_1"] + 1, "cus_2": versions["cus_2"]}
    # cus_1's next call reads the new plan; cus_2's stays on the fast path's cache
    assert call(gate, "exports")[:2] == (True, "ok")
    assert gate.execute(
        "SELECT customer_id, plan FROM skene.usage WHERE feature = 'exports' ORDER BY 1"
    ).fetchall() == [("cus_1", "pro"), ("cus_2", "free")]


def test_new_billing_period_reanchors_billing_cycle_counters(gate: psycopg.Connection) -> None:
    gate.execute("""
        INSERT INTO skene.features (feature, period) VALUES ('cycle_seats', 'billing_cycle');
        INSERT INTO skene.feature_limits VALUES ('cycle_seats', 'free', 2);
        SELECT skene.set_billing_period('cus_1', '2026-04-20+00', '2026-05-20+00');
    """)
    assert call(gate, "cycle_seats")[:3] == (True, "ok", 1)
    # The biller starts a new period early (an upgrade resets the cycle, say).
    gate.execute("SELECT skene.set_billing_period('cus_1', '2026-05-10+00', '2026-06-10+00')")
    assert call(gate, "cycle_seats")[:3] == (True, "ok", 1)
    resets = gate.execute("SELECT resets_at FROM skene.check('cus_1', 'cycle_seats')").fetchone()
    assert resets is not None and resets[0].isoformat() == "2026-06-10T00:00:00+00:00"
