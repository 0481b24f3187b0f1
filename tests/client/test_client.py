"""skene_pg.Skene and AsyncSkene against a real database: the decision as a frozen
dataclass, errors as SkeneError subclasses, pools, and no server-side prepares."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from skene_pg import (
    AsyncSkene,
    DatabaseUnavailable,
    Decision,
    InvalidArgument,
    NotConfigured,
    Refund,
    Skene,
    SkeneError,
    db,
)
from tests.client.conftest import START, clock_options, clock_pool


def test_decision_is_a_frozen_dataclass_of_ints_and_an_aware_utc_time(skene: Skene) -> None:
    decision = skene.check_and_increment("cus_1", "api_calls")
    assert decision == Decision(
        allowed=True,
        reason="ok",
        feature="api_calls",
        plan="free",
        used=1,
        usage_limit=100,
        remaining=99,
        resets_at=datetime(2026, 4, 1, tzinfo=UTC),
    )
    assert decision.resets_at is not None and decision.resets_at.utcoffset() is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.used = 0  # type: ignore[misc]


def test_limit_blocks_and_check_counts_nothing(skene: Skene) -> None:
    assert skene.check_and_increment("cus_1", "api_calls", amount=99).remaining == 1
    assert skene.check("cus_1", "api_calls").allowed
    assert skene.check("cus_1", "api_calls").used == 99  # asking counted nothing
    assert skene.check_and_increment("cus_1", "api_calls").remaining == 0
    blocked = skene.check_and_increment("cus_1", "api_calls")
    assert (blocked.allowed, blocked.reason, blocked.used) == (False, "limit_reached", 100)


def test_unlimited_and_lifetime_are_none(skene: Skene, conn: psycopg.Connection) -> None:
    conn.execute("SELECT skene.set_plan('cus_pro', 'pro')")
    unlimited = skene.check_and_increment("cus_pro", "api_calls")
    assert (unlimited.usage_limit, unlimited.remaining) == (None, None)
    assert skene.check_and_increment("cus_1", "seats").resets_at is None


def test_idempotency_key_replays(skene: Skene) -> None:
    first = skene.check_and_increment("cus_1", "api_calls", idempotency_key="req-1")
    again = skene.check_and_increment("cus_1", "api_calls", idempotency_key="req-1")
    assert (first.used, again.used, again.reason) == (1, 1, "duplicate")


def test_bad_input_is_invalid_argument_with_sqlstate_and_hint(skene: Skene) -> None:
    with pytest.raises(InvalidArgument) as raised:
        skene.check_and_increment("cus_1", "api_call")
    error = raised.value
    assert error.sqlstate == "22023"
    assert error.message == "skene: unknown feature 'api_call'"
    assert error.hint is not None and "api_calls" in error.hint
    assert isinstance(error, SkeneError)
    with pytest.raises(InvalidArgument):
        skene.check_and_increment("", "api_calls")
    with pytest.raises(InvalidArgument):
        skene.check_and_increment("cus_1", "api_calls", amount=0)


def test_no_default_plan_is_not_configured(db_url: str, conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO skene.features (feature, period) VALUES ('api_calls', 'month')")
    with Skene(db_url) as skene, pytest.raises(NotConfigured) as raised:
        skene.check_and_increment("cus_1", "api_calls")
    assert raised.value.sqlstate == "55000"
    assert "skene-pg apply" in (raised.value.hint or "")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket closes


def test_constructor_opens_nothing_and_an_unreachable_database_is_unavailable() -> None:
    url = f"postgresql://nobody@127.0.0.1:{_closed_port()}/nothing"
    skene = Skene(url, timeout=1)  # no error: nothing was opened yet
    assert skene.pool.closed
    with pytest.raises(DatabaseUnavailable) as raised:
        skene.check("cus_1", "api_calls")
    assert raised.value.sqlstate is None
    skene.close()


def test_identify_and_track_write_the_customer(skene: Skene, conn: psycopg.Connection) -> None:
    skene.identify(
        "cus_7",
        email="ada@example.com",
        name="Ada",
        attributes={"company": "Acme"},
        timezone="Europe/Berlin",
    )
    skene.track("cus_7", "project_created", {"size": 3})
    row = conn.execute(
        "SELECT email, name, attributes, timezone, last_activity_at FROM skene.customers "
        "WHERE customer_id = 'cus_7'"
    ).fetchone()
    assert row is not None
    assert row[:4] == ("ada@example.com", "Ada", {"company": "Acme"}, "Europe/Berlin")
    assert row[4] == datetime.fromisoformat(START)
    with pytest.raises(InvalidArgument):
        skene.identify("cus_7", timezone="Mars/Olympus")


def test_no_statement_is_prepared_on_the_server(db_url: str, catalogue: None) -> None:
    with Skene(db_url, max_size=1) as skene:
        for _ in range(10):  # psycopg would prepare from the 5th run of a query
            skene.check_and_increment("cus_1", "api_calls")
        with skene.pool.connection() as conn:
            prepared = conn.execute("SELECT count(*) FROM pg_catalog.pg_prepared_statements")
            assert prepared.fetchone() == (0,)
            assert conn.prepare_threshold is None
            assert conn.info.parameter_status("application_name") == db.APPLICATION_NAME


def test_async_client_makes_the_same_calls(db_url: str, catalogue: None) -> None:
    async def scenario() -> tuple[Decision, Decision, str | None]:
        pool = AsyncConnectionPool(
            db_url,
            kwargs=db.connect_kwargs(autocommit=True, options=clock_options()),
            min_size=1,
            open=False,
        )
        skene = AsyncSkene(pool)
        try:
            first = await skene.check_and_increment("cus_1", "api_calls", amount=100)
            blocked = await skene.check_and_increment("cus_1", "api_calls")
            await skene.identify("cus_1", email="a@example.com")
            try:
                await skene.check("cus_1", "nope")
            except InvalidArgument as exc:
                state = exc.sqlstate
            return first, blocked, state
        finally:
            await pool.close()

    first, blocked, state = asyncio.run(scenario())
    assert (first.allowed, first.remaining) == (True, 0)
    assert (blocked.allowed, blocked.reason) == (False, "limit_reached")
    assert blocked.resets_at == datetime(2026, 4, 1, tzinfo=UTC)
    assert state == "22023"


def test_a_pool_of_the_callers_own_is_used_and_left_open(db_url: str, catalogue: None) -> None:
    pool = clock_pool(db_url)
    with Skene(pool) as skene:
        assert skene.check_and_increment("cus_1", "api_calls").used == 1
    assert not pool.closed  # the caller's pool is the caller's to close
    pool.close()


def test_refund_gives_back_a_counted_call(skene: Skene) -> None:
    skene.check_and_increment("cus_1", "api_calls", amount=2)
    skene.check_and_increment("cus_1", "api_calls", amount=3, idempotency_key="req-9")
    refund = skene.refund("cus_1", "api_calls", None, "req-9")
    assert refund == Refund(
        3, "refunded", "api_calls", "free", 2, 100, 98, datetime(2026, 4, 1, tzinfo=UTC)
    )
    assert skene.refund("cus_1", "api_calls", 3, "req-9").reason == "not_counted"


def test_gates_lists_every_feature(skene: Skene, conn: psycopg.Connection) -> None:
    conn.execute(
        "UPDATE skene.features SET name = 'API calls', "
        """match = '[{"method": "POST", "path": "/api/**"}]' WHERE feature = 'api_calls'"""
    )
    conn.execute("INSERT INTO skene.settings (name, value) VALUES ('upgrade_url', '/billing')")
    by_feature = {gate.feature: gate for gate in skene.gates()}
    api = by_feature["api_calls"]
    assert (api.name, api.upgrade_url) == ("API calls", "/billing")
    assert api.message == "You've reached your free tier limit. Upgrade to continue."
    assert api.matches("POST", "/api/v1/things") and not api.matches("GET", "/api/v1/things")
    assert (by_feature["seats"].name, by_feature["seats"].match) == ("seats", ())
