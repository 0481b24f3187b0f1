"""Billing tests: a catalogue with a Stripe price and a metered feature, the fake Stripe
API, locally signed webhooks through the Starlette app, and drained workers."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from skene_pg.billing.stripe_jobs import StripeMeterHandler, StripeSyncHandler, make_client
from skene_pg.email.handler import EmailHandler
from skene_pg.email.templates import TemplateRenderer
from skene_pg.jobs.worker import Worker, WorkerSettings
from skene_pg.webhooks import WebhookSettings, make_app
from tests.billing.fake_stripe import FakeStripe
from tests.worker.conftest import email_settings, resend_provider
from tests.worker.fake_resend import FakeResend

STRIPE_SECRET = "whsec_test_secret"
RESEND_SECRET = "whsec_" + "c2tlbmUtdGVzdC1yZXNlbmQtc2VjcmV0"  # base64 of a test key
LIMIT = 3

CATALOGUE = f"""
INSERT INTO skene.plans (plan, paid, is_default) VALUES
    ('free', false, true), ('pro', true, false), ('team', true, false);
INSERT INTO skene.plan_prices (price_id, plan) VALUES ('price_pro', 'pro'), ('price_team', 'team');
INSERT INTO skene.features (feature, period) VALUES ('api_calls', 'month');
INSERT INTO skene.features (feature, period, meter) VALUES ('tokens', 'month', 'tokens_used');
INSERT INTO skene.feature_limits (feature, plan, usage_limit) VALUES
    ('api_calls', 'free', {LIMIT}), ('api_calls', 'pro', NULL), ('api_calls', 'team', NULL),
    ('tokens', 'free', NULL), ('tokens', 'pro', NULL), ('tokens', 'team', NULL);
INSERT INTO skene.loops (name, type, feature, config) VALUES
    ('free_tier_limit', 'freemium', 'api_calls',
     '{{"upgrade_prompt": {{"channel": "email", "template": "upgrade_prompt"}}}}');
"""


@pytest.fixture
def catalogue(conn: psycopg.Connection) -> None:
    conn.execute(CATALOGUE)


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def fake_resend() -> Iterator[FakeResend]:
    with FakeResend() as fake:
        yield fake


# -- webhooks ------------------------------------------------------------------------


def stripe_signature(body: bytes, secret: str = STRIPE_SECRET, at: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send (v1: HMAC-SHA256 of "t.body")."""
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def stripe_event(
    event_id: str, type_: str, obj: dict[str, Any], created: int | None = None
) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": type_,
        "created": created or int(time.time()),
        "data": {"object": obj},
    }


def subscription_object(
    customer: str,
    sub_id: str,
    status: str,
    skene_customer: str | None = None,
    price: str = "price_pro",
) -> dict[str, Any]:
    """A subscription as a webhook carries it (possibly stale by the time it arrives)."""
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "metadata": {"skene_customer_id": skene_customer} if skene_customer else {},
        "items": {"data": [{"price": {"id": price}}]},
    }


@pytest.fixture
def webhooks(db_url: str) -> Iterator[TestClient]:
    """The webhook app in this process (Starlette's test client: no socket)."""
    app = make_app(
        db_url, WebhookSettings(stripe_secret=STRIPE_SECRET, resend_secret=RESEND_SECRET)
    )
    with TestClient(app) as client:
        yield client


def post_stripe(client: TestClient, event: dict[str, Any], at: int | None = None) -> Any:
    body = json.dumps(event).encode()
    return client.post(
        "/webhooks/stripe",
        content=body,
        headers={
            "Stripe-Signature": stripe_signature(body, at=at),
            "Content-Type": "application/json",
        },
    )


# -- workers -------------------------------------------------------------------------


def stripe_handlers(fake: FakeStripe) -> list[Any]:
    client = make_client("sk_test_123", fake.url, timeout=5)
    return [StripeSyncHandler(client), StripeMeterHandler(client)]


def drain(db_url: str, handlers: list[Any], timeout: float = 20.0, **settings: Any) -> None:
    """Run workers until no job of theirs is due within 3 s (retries and 429s included)."""
    options = {
        "concurrency": 4,
        "poll_interval": 0.2,
        "lease": 5.0,
        "retry_base": 0.01,
        "drain": True,
        **settings,
    }
    kinds = [h.kind for h in handlers]
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            Worker(db_url, handlers, WorkerSettings(**options)).run()
            waiting = count(
                conn,
                "SELECT count(*) FROM skene.jobs WHERE kind = ANY (%s) AND state IN "
                "('available', 'retryable', 'running') AND run_at < now() + interval '3 seconds'",
                kinds,
            )
            if not waiting:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{waiting} job(s) still due after {timeout}s")
            time.sleep(0.05)  # poll interval of the condition, as in wait_for


def drain_stripe(db_url: str, fake: FakeStripe, **settings: Any) -> None:
    drain(db_url, stripe_handlers(fake), **settings)


def email_handler(fake: FakeResend) -> EmailHandler:
    return EmailHandler(resend_provider(fake), TemplateRenderer(None), email_settings())


def plan_of(conn: psycopg.Connection, customer: str) -> str:
    row = conn.execute(
        "SELECT plan FROM skene.customers WHERE customer_id = %s", (customer,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def count(conn: psycopg.Connection, sql: str, *args: Any) -> int:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return int(row[0])
