"""Bad input: SQLSTATE 22023, a message naming the value, a hint; nothing consumed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.sql.conftest import DEFINED_FEATURES
from tests.sql.helpers import check, check_and_increment, scalar

pytestmark = pytest.mark.usefixtures("catalogue")

FEATURE_HINT = f"Defined features: {DEFINED_FEATURES}."


def fails(call: Any, *args: Any, **kwargs: Any) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        call(*args, **kwargs)
    err = info.value
    assert err.sqlstate == "22023", err
    assert err.diag.message_hint, "no HINT"
    return err


def state(conn: psycopg.Connection) -> tuple[int, ...]:
    return tuple(
        scalar(conn, f"SELECT count(*) FROM skene.{t}")
        for t in ("customers", "usage", "limit_hits", "jobs", "idempotency_keys")
    )


@pytest.fixture
def acme(conn: psycopg.Connection) -> psycopg.Connection:
    """acme exists and has counted 5 api_calls, so the fast path is warm."""
    check_and_increment(conn, "acme", "api_calls", 5)
    return conn


# Each case runs for a known customer (its fast path warm) and an unknown one, with and
# without an idempotency key: the key is claimed before counting, so it must not turn
# bad input into another error (a foreign-key violation, say).
CALLERS = [(customer, key) for customer in ("acme", "nobody") for key in (None, "k1")]


def test_unknown_feature(acme: psycopg.Connection) -> None:
    before = state(acme)
    for customer, key in CALLERS:
        err = fails(check_and_increment, acme, customer, "api_call", key=key)
        assert err.diag.message_primary == "skene: unknown feature 'api_call'"
        assert err.diag.message_hint == FEATURE_HINT
        err = fails(check_and_increment, acme, customer, None, key=key)
        assert err.diag.message_primary == "skene: unknown feature NULL"
        assert err.diag.message_hint == FEATURE_HINT
        err = fails(check, acme, customer, "api_call")
        assert err.diag.message_primary == "skene: unknown feature 'api_call'"
    assert state(acme) == before


def test_unknown_feature_hint_when_none_are_defined(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM skene.loops; DELETE FROM skene.features")
    err = fails(check_and_increment, conn, "acme", "api_calls")
    assert err.diag.message_hint == (
        "No features are defined yet: add them to skene.toml and run skene-pg apply."
    )


def test_null_or_empty_customer(acme: psycopg.Connection) -> None:
    before = state(acme)
    for customer, shown in ((None, "NULL"), ("", "''")):
        for key in (None, "k1"):
            for feature in ("api_calls", "rolling", "nope"):
                err = fails(check_and_increment, acme, customer, feature, key=key)
                assert err.diag.message_primary == (
                    f"skene: customer_id must be a non-empty string, got {shown}"
                )
                assert "customer" in (err.diag.message_hint or "")
        fails(check, acme, customer, "api_calls")
        for call in ("skene.set_plan(%s, 'pro')", "skene.identify(%s)", "skene.unsubscribe(%s)"):
            with pytest.raises(errors.InvalidParameterValue):
                acme.execute(f"SELECT {call}", (customer,))
    assert state(acme) == before


def test_amount_not_positive(acme: psycopg.Connection) -> None:
    before = state(acme)
    for amount, shown in ((0, "0"), (-1, "-1"), (-(10**12), "-1000000000000"), (None, "NULL")):
        for customer, key in CALLERS:
            for feature in ("api_calls", "rolling", "sso"):
                err = fails(check_and_increment, acme, customer, feature, amount, key=key)
                assert err.diag.message_primary == (
                    f"skene: amount must be a positive integer, got {shown}"
                )
                err = fails(check, acme, customer, feature, amount)
                assert err.diag.message_primary == (
                    f"skene: amount must be a positive integer, got {shown}"
                )
    assert state(acme) == before
    assert scalar(acme, "SELECT used FROM skene.usage WHERE customer_id = 'acme'") == 5


def test_rejected_call_in_a_transaction_leaves_nothing(acme: psycopg.Connection) -> None:
    before = state(acme)
    with pytest.raises(errors.InvalidParameterValue), acme.transaction():
        check_and_increment(acme, "newbie", "api_calls", 3)
        check_and_increment(acme, "newbie", "api_calls", 0)
    assert state(acme) == before


def test_other_functions_name_the_bad_value(conn: psycopg.Connection) -> None:
    err = fails(conn.execute, "SELECT skene.set_plan('acme', 'platinum')")
    assert err.diag.message_primary == "skene: unknown plan 'platinum'"
    assert err.diag.message_hint == "Defined plans: free, pro, team."
    err = fails(conn.execute, "SELECT skene.identify('acme', timezone => 'Mars/Olympus')")
    assert "'Mars/Olympus'" in (err.diag.message_primary or "")
    err = fails(conn.execute, "SELECT skene.identify('acme', attributes => '[1]')")
    assert "array" in (err.diag.message_primary or "")
    err = fails(conn.execute, "SELECT skene.set_limit_override('acme', 'api_calls', -1)")
    assert "-1" in (err.diag.message_primary or "")
    err = fails(conn.execute, "SELECT skene.set_limit_override('acme', 'nope', 1)")
    assert err.diag.message_hint == FEATURE_HINT
    assert state(conn) == (0, 0, 0, 0, 0)
