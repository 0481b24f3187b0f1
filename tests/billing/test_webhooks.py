"""The webhook endpoints: anything not signed right is a 400 that stores nothing;
Resend bounces and complaints suppress the address for good."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient
from svix.webhooks import Webhook as SvixWebhook

from tests.billing.conftest import (
    RESEND_SECRET,
    STRIPE_SECRET,
    count,
    drain,
    email_handler,
    plan_of,
    post_stripe,
    stripe_event,
    stripe_signature,
    subscription_object,
)
from tests.billing.fake_stripe import FakeStripe
from tests.worker.conftest import block, cli_env, listen_process, wait_for
from tests.worker.fake_resend import FakeResend

pytestmark = pytest.mark.usefixtures("catalogue")

EVENT = stripe_event(
    "evt_1",
    "customer.subscription.created",
    subscription_object("cus_A", "sub_1", "active", skene_customer="acct_1"),
)


def nothing_stored(conn: psycopg.Connection) -> bool:
    return (
        count(conn, "SELECT count(*) FROM skene.billing_events") == 0
        and count(conn, "SELECT count(*) FROM skene.jobs") == 0
        and count(conn, "SELECT count(*) FROM skene.billing_customers") == 0
    )


def post_raw(client: TestClient, body: bytes, signature: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return client.post("/webhooks/stripe", content=body, headers=headers)


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(lambda body: stripe_signature(body, secret="whsec_wrong"), id="wrong-secret"),
        pytest.param(lambda body: stripe_signature(body + b" "), id="other-body"),
        pytest.param(lambda body: "t=1,v1=deadbeef", id="garbage"),
        pytest.param(lambda body: None, id="missing"),
        pytest.param(lambda body: stripe_signature(body, at=int(time.time()) - 301), id="expired"),
    ],
)
def test_a_bad_signature_is_a_400_and_stores_nothing(
    conn: psycopg.Connection, webhooks: TestClient, signature: Any
) -> None:
    body = json.dumps(EVENT).encode()
    response = post_raw(webhooks, body, signature(body))
    assert response.status_code == 400
    assert nothing_stored(conn)


def test_malformed_json_is_a_400_and_stores_nothing(
    conn: psycopg.Connection, webhooks: TestClient
) -> None:
    for body in (b'{"id": "evt_1", "type": ', b"[1, 2]", b'{"no": "id"}'):
        response = post_raw(webhooks, body, stripe_signature(body))
        assert response.status_code == 400, body
    assert nothing_stored(conn)


def test_a_signature_within_the_tolerance_is_accepted(
    conn: psycopg.Connection, webhooks: TestClient
) -> None:
    assert post_stripe(webhooks, EVENT, at=int(time.time()) - 250).status_code == 200
    assert count(conn, "SELECT count(*) FROM skene.billing_events") == 1


def test_unhandled_event_types_are_stored_but_queue_nothing(
    conn: psycopg.Connection, webhooks: TestClient
) -> None:
    event = stripe_event("evt_x", "charge.refunded", {"object": "charge", "customer": "cus_A"})
    assert post_stripe(webhooks, event).status_code == 200
    assert conn.execute("SELECT error FROM skene.billing_events").fetchall() == [
        ("event type not handled",)
    ]
    assert count(conn, "SELECT count(*) FROM skene.jobs") == 0


def resend_post(client: TestClient, payload: dict[str, Any], secret: str = RESEND_SECRET) -> Any:
    body = json.dumps(payload)
    msg_id = f"msg_{time.monotonic_ns()}"
    now = datetime.now(UTC)
    signature = SvixWebhook(secret).sign(msg_id, now, body)
    return client.post(
        "/webhooks/resend",
        content=body.encode(),
        headers={
            "svix-id": msg_id,
            "svix-timestamp": str(int(now.timestamp())),
            "svix-signature": signature,
            "Content-Type": "application/json",
        },
    )


def test_a_bounced_address_is_never_emailed_again(
    conn: psycopg.Connection, db_url: str, webhooks: TestClient, fake_resend: FakeResend
) -> None:
    conn.execute("SELECT skene.identify('acct_1', email => 'Ada@Example.test')")
    bounce = {
        "type": "email.bounced",
        "created_at": "2026-11-23T10:00:00Z",
        "data": {"email_id": "e_1", "to": ["ada@example.test"], "subject": "Hi"},
    }
    assert resend_post(webhooks, bounce).status_code == 200
    assert conn.execute("SELECT email, reason, source FROM skene.suppressions").fetchall() == [
        ("ada@example.test", "bounce", "resend")
    ]
    block(conn, "acct_1")  # the upgrade prompt is queued ...
    drain(db_url, [email_handler(fake_resend)])
    (job,) = conn.execute("SELECT state, last_error FROM skene.jobs").fetchall()
    assert job == ("skipped", "the address is suppressed (bounce, resend)")
    assert not fake_resend.received  # ... and never sent


def test_complaints_suppress_and_bad_resend_signatures_are_refused(
    conn: psycopg.Connection, webhooks: TestClient
) -> None:
    complaint = {"type": "email.complained", "data": {"to": ["bob@example.test"]}}
    assert resend_post(webhooks, complaint, secret="whsec_" + "d3Jvbmctc2VjcmV0").status_code == 400
    assert count(conn, "SELECT count(*) FROM skene.suppressions") == 0
    assert resend_post(webhooks, complaint).status_code == 200
    assert resend_post(webhooks, {"type": "email.delivered", "data": {"to": ["c@x.test"]}}).json()[
        "ignored"
    ]
    assert conn.execute("SELECT email, reason FROM skene.suppressions").fetchall() == [
        ("bob@example.test", "complaint")
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_listen_http_serves_webhooks_and_syncs_the_plan(
    conn: psycopg.Connection, db_url: str, fake_stripe: FakeStripe
) -> None:
    fake_stripe.set_subscription("cus_A", "sub_1", "active")
    port = free_port()
    env = cli_env(
        STRIPE_API_KEY="sk_test_123",
        STRIPE_API_URL=fake_stripe.url,
        STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
    )
    options = ("--http", f"127.0.0.1:{port}", "--poll-interval", "0.2")
    with listen_process(db_url, env, *options) as proc:
        body = json.dumps(EVENT).encode()

        def post() -> Any:
            try:
                return httpx.post(
                    f"http://127.0.0.1:{port}/webhooks/stripe",
                    content=body,
                    headers={"Stripe-Signature": stripe_signature(body)},
                )
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return None

        response = wait_for(post, timeout=20, what="the webhook server")
        assert response.status_code == 200
        wait_for(
            lambda: (
                plan_of(conn, "acct_1") == "pro"
                if count(conn, "SELECT count(*) FROM skene.customers WHERE customer_id = 'acct_1'")
                else False
            ),
            timeout=20,
            what="the plan sync",
        )
