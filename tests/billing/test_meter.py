"""Metered usage to Stripe Billing Meters: per customer, feature and UTC hour, with a
deterministic identifier, so retries and crashes never bill twice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import psycopg
import pytest

from skene_pg.jobs import protocol as q
from tests.billing.conftest import count, drain_stripe, stripe_handlers
from tests.billing.fake_stripe import FakeStripe

pytestmark = pytest.mark.usefixtures("catalogue")


@pytest.fixture
def past(connect: Callable[..., psycopg.Connection]) -> psycopg.Connection:
    """A superuser session whose skene clock is three hours back: its usage lands in a
    bucket whose hour is over, so the report is due now."""
    conn = connect()
    conn.execute(
        "SELECT set_config('skene.now', (date_trunc('hour', now()) - interval '3 hours'"
        " + interval '10 minutes')::text, false)"
    )
    conn.execute("SELECT skene.link_billing_customer('acct_1', 'stripe', 'cus_A')")
    return conn


def use(conn: psycopg.Connection, amount: int, feature: str = "tokens") -> None:
    conn.execute("SELECT skene.check_and_increment('acct_1', %s, %s)", (feature, amount))


def bucket(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT date_trunc('hour', skene.now())").fetchone()
    assert row is not None
    return row[0]


def identifier(conn: psycopg.Connection, offset: int) -> str:
    return f"skene:acct_1:tokens:{int(bucket(conn).timestamp())}:{offset}"


def test_usage_is_reported_per_hour_with_a_deterministic_identifier(
    conn: psycopg.Connection, db_url: str, past: psycopg.Connection, fake_stripe: FakeStripe
) -> None:
    use(past, 5)
    use(past, 7)
    use(past, 4, feature="api_calls")  # not metered: no bucket, no report
    assert conn.execute("SELECT feature, quantity FROM skene.meter_usage").fetchall() == [
        ("tokens", 12)
    ]
    drain_stripe(db_url, fake_stripe)
    (event,) = fake_stripe.meter_events
    assert event["identifier"] == identifier(past, 0)
    assert event["event_name"] == "tokens_used"
    assert event["payload"] == {"stripe_customer_id": "cus_A", "value": "12"}
    end = bucket(past) + timedelta(hours=1)
    assert event["timestamp"] == int(end.timestamp()) - 1  # inside the hour, in the past
    assert conn.execute("SELECT quantity, reported FROM skene.meter_usage").fetchall() == [(12, 12)]


def test_a_500_is_retried_with_the_same_identifier(
    conn: psycopg.Connection, db_url: str, past: psycopg.Connection, fake_stripe: FakeStripe
) -> None:
    use(past, 5)
    fake_stripe.then("500").then("429")
    drain_stripe(db_url, fake_stripe)
    sent = fake_stripe.sent("/v1/billing/meter_events")
    assert [r.status for r in sent] == [500, 429, 200]
    assert {r.params["identifier"] for r in sent} == {identifier(past, 0)}
    assert {r.idempotency_key for r in sent} == {identifier(past, 0)}
    assert len(fake_stripe.meter_events) == 1


def test_nothing_is_reported_twice_after_a_crash(
    conn: psycopg.Connection, db_url: str, past: psycopg.Connection, fake_stripe: FakeStripe
) -> None:
    use(past, 5)
    # a worker claims the report, sends it, and dies before recording the outcome
    (job,) = q.claim(conn, "doomed:1", 10, 30.0, ["stripe_meter"])
    handler = stripe_handlers(fake_stripe)[1]
    context = handler.prepare(conn, [job])
    use(past, 2)  # more units arrive before the retry
    assert handler.run(job, context[job.id]).outcome == "succeeded"
    conn.execute("UPDATE skene.jobs SET locked_until = now() - interval '1 second'")
    assert q.reap(conn) == 1
    drain_stripe(db_url, fake_stripe)
    sent = fake_stripe.sent("/v1/billing/meter_events")
    assert [r.params["identifier"] for r in sent] == [
        identifier(past, 0),  # the crashed attempt
        identifier(past, 0),  # its retry: the same identifier and value, replayed by Stripe
        identifier(past, 5),  # the units that came in meanwhile, on their own
    ]
    assert [e["payload"]["value"] for e in fake_stripe.meter_events] == ["5", "2"]
    assert conn.execute("SELECT quantity, reported FROM skene.meter_usage").fetchall() == [(7, 7)]


def test_units_after_the_report_get_their_own_report(
    conn: psycopg.Connection, db_url: str, past: psycopg.Connection, fake_stripe: FakeStripe
) -> None:
    use(past, 5)
    drain_stripe(db_url, fake_stripe)
    use(past, 3)  # a late transaction of the same hour
    drain_stripe(db_url, fake_stripe)
    assert [(e["identifier"], e["payload"]["value"]) for e in fake_stripe.meter_events] == [
        (identifier(past, 0), "5"),
        (identifier(past, 5), "3"),
    ]


def test_the_current_hour_is_not_reported_yet_and_unlinked_customers_wait(
    conn: psycopg.Connection, db_url: str, fake_stripe: FakeStripe
) -> None:
    conn.execute("SELECT skene.check_and_increment('acct_9', 'tokens', 4)")
    (run_at,) = conn.execute(
        "SELECT run_at - date_trunc('hour', now()) FROM skene.jobs"
    ).fetchone() or (None,)
    assert run_at == timedelta(hours=1, minutes=5)  # after the hour, with a grace period
    conn.execute("UPDATE skene.jobs SET run_at = now()")
    drain_stripe(db_url, fake_stripe)
    (state, error) = conn.execute("SELECT state, last_error FROM skene.jobs").fetchone() or (
        None,
        None,
    )
    assert state == "available"  # deferred: not linked to a Stripe customer yet, or hour not over
    assert error is not None
    assert not fake_stripe.meter_events
    assert count(conn, "SELECT count(*) FROM skene.meter_usage WHERE reported = 0") == 1
