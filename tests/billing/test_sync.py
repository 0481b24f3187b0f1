"""Plan sync by re-fetch: whatever order, repetition or staleness the webhooks arrive
with, the final plan is the one of the subscription Stripe has now."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.billing.conftest import (
    count,
    drain_stripe,
    plan_of,
    post_stripe,
    stripe_event,
    subscription_object,
)
from tests.billing.fake_stripe import FakeStripe

pytestmark = pytest.mark.usefixtures("catalogue")


def link(conn: psycopg.Connection, customer: str, stripe_customer: str) -> None:
    conn.execute(
        "SELECT skene.link_billing_customer(%s, 'stripe', %s)", (customer, stripe_customer)
    )


def test_updated_before_created_ends_on_the_current_plan(
    conn: psycopg.Connection, db_url: str, webhooks: TestClient, fake_stripe: FakeStripe
) -> None:
    fake_stripe.set_subscription("cus_A", "sub_1", "active", price="price_team")
    obj = subscription_object(
        "cus_A", "sub_1", "active", skene_customer="acct_1", price="price_team"
    )
    assert (
        post_stripe(
            webhooks, stripe_event("evt_2", "customer.subscription.updated", obj)
        ).status_code
        == 200
    )
    assert (
        post_stripe(
            webhooks, stripe_event("evt_1", "customer.subscription.created", obj)
        ).status_code
        == 200
    )
    drain_stripe(db_url, fake_stripe)
    assert plan_of(conn, "acct_1") == "team"
    assert count(conn, "SELECT count(*) FROM skene.billing_events WHERE processed_at IS NULL") == 0
    # the billing period Stripe reports anchors billing_cycle limits
    row = conn.execute(
        "SELECT billing_period_start, billing_period_end FROM skene.customers "
        "WHERE customer_id = 'acct_1'"
    ).fetchone()
    assert row == (
        datetime.fromtimestamp(1_700_000_000, UTC),
        datetime.fromtimestamp(1_702_592_000, UTC),
    )


def test_the_same_event_twice_is_stored_and_synced_once(
    conn: psycopg.Connection, db_url: str, webhooks: TestClient, fake_stripe: FakeStripe
) -> None:
    fake_stripe.set_subscription("cus_A", "sub_1", "active")
    event = stripe_event(
        "evt_1",
        "customer.subscription.created",
        subscription_object("cus_A", "sub_1", "active", skene_customer="acct_1"),
    )
    first, second = post_stripe(webhooks, event), post_stripe(webhooks, event)
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (second.status_code, second.json()["duplicate"]) == (200, True)
    assert count(conn, "SELECT count(*) FROM skene.billing_events") == 1
    assert count(conn, "SELECT count(*) FROM skene.jobs WHERE kind = 'stripe_sync'") == 1
    drain_stripe(db_url, fake_stripe)
    assert plan_of(conn, "acct_1") == "pro"
    assert count(conn, "SELECT count(*) FROM skene.plan_changes WHERE customer_id = 'acct_1'") == 1
    assert count(conn, "SELECT count(*) FROM skene.conversions") == 1


def test_two_events_in_the_same_second(
    conn: psycopg.Connection, db_url: str, webhooks: TestClient, fake_stripe: FakeStripe
) -> None:
    link(conn, "acct_1", "cus_A")
    fake_stripe.set_subscription("cus_A", "sub_1", "active", price="price_team")
    second = 1_800_000_000
    for n, status in enumerate(("incomplete", "active")):
        obj = subscription_object("cus_A", "sub_1", status, price="price_team")
        event = stripe_event(f"evt_{n}", "customer.subscription.updated", obj, created=second)
        assert post_stripe(webhooks, event).status_code == 200
    drain_stripe(db_url, fake_stripe)
    assert plan_of(conn, "acct_1") == "team"
    assert count(conn, "SELECT count(*) FROM skene.jobs WHERE state = 'succeeded'") == 2


def test_deleted_then_a_stale_updated_leaves_the_default_plan(
    conn: psycopg.Connection, db_url: str, webhooks: TestClient, fake_stripe: FakeStripe
) -> None:
    link(conn, "acct_1", "cus_A")
    conn.execute("SELECT skene.set_plan('acct_1', 'pro', 'stripe', 'sub_1')")
    fake_stripe.set_subscription("cus_A", "sub_1", "canceled")  # what Stripe says now
    deleted = stripe_event(
        "evt_9", "customer.subscription.deleted", subscription_object("cus_A", "sub_1", "canceled")
    )
    stale = stripe_event(
        "evt_5", "customer.subscription.updated", subscription_object("cus_A", "sub_1", "active")
    )
    assert post_stripe(webhooks, deleted).status_code == 200
    assert post_stripe(webhooks, stale).status_code == 200
    drain_stripe(db_url, fake_stripe)
    assert plan_of(conn, "acct_1") == "free"


def test_paused_subscription_means_the_default_plan_and_resumed_restores_it(
    conn: psycopg.Connection, db_url: str, webhooks: TestClient, fake_stripe: FakeStripe
) -> None:
    link(conn, "acct_1", "cus_A")
    fake_stripe.set_subscription("cus_A", "sub_1", "paused")
    obj = subscription_object("cus_A", "sub_1", "paused")
    post_stripe(webhooks, stripe_event("evt_1", "customer.subscription.paused", obj))
    drain_stripe(db_url, fake_stripe)
    assert plan_of(conn, "acct_1") == "free"
    fake_stripe.set_subscription("cus_A", "sub_1", "active")
    post_stripe(webhooks, stripe_event("evt_2", "customer.subscription.resumed", obj))
    drain_stripe(db_url, fake_stripe)
    assert plan_of(conn, "acct_1") == "pro"


def test_an_apply_read_before_the_last_applied_one_is_stale(conn: psycopg.Connection) -> None:
    link(conn, "acct_1", "cus_A")
    active = '{"id": "sub_1", "status": "active", "price_ids": ["price_pro"]}'
    late, early = "2030-01-01 00:00:02+00", "2030-01-01 00:00:01+00"
    apply = "SELECT skene.apply_stripe_subscription('cus_A', %s, %s::jsonb)"
    assert conn.execute(apply, (late, None)).fetchone() == ("free",)
    # a fetch that started earlier (saw the subscription active) finishes later
    assert conn.execute(apply, (early, active)).fetchone() == ("stale",)
    assert plan_of(conn, "acct_1") == "free"


def test_checkout_links_by_client_reference_id(
    conn: psycopg.Connection, db_url: str, webhooks: TestClient, fake_stripe: FakeStripe
) -> None:
    fake_stripe.set_subscription("cus_B", "sub_2", "trialing")
    session = {
        "id": "cs_1",
        "object": "checkout.session",
        "customer": "cus_B",
        "client_reference_id": "acct_2",
        "subscription": "sub_2",
    }
    post_stripe(webhooks, stripe_event("evt_1", "checkout.session.completed", session))
    drain_stripe(db_url, fake_stripe)
    assert plan_of(conn, "acct_2") == "pro"
    assert conn.execute(
        "SELECT customer_id, subscription_id, subscription_status FROM skene.billing_customers"
    ).fetchall() == [("acct_2", "sub_2", "trialing")]


def test_an_unlinked_customer_changes_nothing_and_says_why(
    conn: psycopg.Connection, db_url: str, webhooks: TestClient, fake_stripe: FakeStripe
) -> None:
    invoice = {"id": "in_1", "object": "invoice", "customer": "cus_unknown"}
    post_stripe(webhooks, stripe_event("evt_1", "invoice.paid", invoice))
    drain_stripe(db_url, fake_stripe)
    (job,) = conn.execute("SELECT state, last_error FROM skene.jobs").fetchall()
    assert job[0] == "skipped" and "linked to no skene customer" in job[1]
    assert conn.execute("SELECT error FROM skene.billing_events").fetchall() == [
        ("the Stripe customer is linked to no skene customer",)
    ]
    assert not fake_stripe.sent("/v1/subscriptions")


def test_a_stripe_500_is_retried(
    conn: psycopg.Connection, db_url: str, webhooks: TestClient, fake_stripe: FakeStripe
) -> None:
    link(conn, "acct_1", "cus_A")
    fake_stripe.set_subscription("cus_A", "sub_1", "active")
    fake_stripe.then("500")
    post_stripe(
        webhooks, stripe_event("evt_1", "invoice.paid", {"object": "invoice", "customer": "cus_A"})
    )
    drain_stripe(db_url, fake_stripe)
    assert plan_of(conn, "acct_1") == "pro"
    assert [r.status for r in fake_stripe.sent("/v1/subscriptions")] == [500, 200]


def test_an_unmapped_price_fails_the_job_with_the_reason_and_changes_nothing(
    conn: psycopg.Connection, db_url: str, webhooks: TestClient, fake_stripe: FakeStripe
) -> None:
    link(conn, "acct_1", "cus_A")
    fake_stripe.set_subscription("cus_A", "sub_1", "active", price="price_unknown")
    post_stripe(
        webhooks, stripe_event("evt_1", "invoice.paid", {"object": "invoice", "customer": "cus_A"})
    )
    conn.execute("UPDATE skene.jobs SET max_attempts = 1")
    drain_stripe(db_url, fake_stripe)
    (job,) = conn.execute("SELECT state, last_error FROM skene.jobs").fetchall()
    assert job[0] == "dead"
    assert "price_unknown of subscription sub_1 map to no plan" in job[1]
    assert plan_of(conn, "acct_1") == "free"


def test_reconcile_queues_one_sync_per_linked_customer_a_day(
    conn: psycopg.Connection, db_url: str, fake_stripe: FakeStripe
) -> None:
    for n in range(3):
        link(conn, f"acct_{n}", f"cus_{n}")
    fake_stripe.set_subscription("cus_1", "sub_1", "active")
    assert conn.execute("SELECT skene.enqueue_billing_reconcile()").fetchone() == (3,)
    assert conn.execute("SELECT skene.enqueue_billing_reconcile()").fetchone() == (0,)
    drain_stripe(db_url, fake_stripe)
    assert [plan_of(conn, f"acct_{n}") for n in range(3)] == ["free", "pro", "free"]


def test_billing_link_and_reconcile_commands(
    conn: psycopg.Connection, db_url: str, fake_stripe: FakeStripe
) -> None:
    from tests.worker.conftest import cli_env, skene_pg

    fake_stripe.set_subscription("cus_A", "sub_1", "active")
    linked = skene_pg("billing", "link", "acct_1", "cus_A", "--database-url", db_url, env=cli_env())
    assert linked.returncode == 0, linked.stderr
    drain_stripe(db_url, fake_stripe)
    assert plan_of(conn, "acct_1") == "pro"
    result = skene_pg("billing", "reconcile", "--database-url", db_url, env=cli_env())
    assert result.stdout.strip() == "queued 1 sync job(s) for 1 linked Stripe customer(s)"
