"""The billing part of `skene-pg demo`: the blocked free customer subscribes. A
checkout.session.completed webhook, signed here with a demo secret, goes through the
real webhook server; the worker re-fetches the subscription from a small in-process
stand-in for the Stripe API (nothing leaves the machine), the customer is on pro and
unblocked, and the funnel counts the conversion."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click

from skene_pg import db
from skene_pg.billing import queries
from skene_pg.billing.stripe_jobs import StripeSyncHandler, make_client
from skene_pg.cli.output import format_table
from skene_pg.http_process import bind
from skene_pg.http_server import HttpServer
from skene_pg.jobs.worker import Worker, WorkerSettings
from skene_pg.report import print_funnel
from skene_pg.webhooks import WebhookSettings, make_app

CUSTOMER = "cus_demo_free"  # as in skene_pg.demo
STRIPE_CUSTOMER = "cus_DemoStripe"
PRICE = "price_pro_monthly"  # examples/skene.toml: plans.pro.stripe_prices
SECRET = "whsec_demo_only"


class _DemoStripe:
    """GET /v1/subscriptions: one active subscription on the pro price."""

    def __init__(self) -> None:
        now = int(time.time())
        self.subscription = {
            "id": "sub_Demo",
            "object": "subscription",
            "customer": STRIPE_CUSTOMER,
            "status": "active",
            "created": now,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": "si_Demo",
                        "price": {"id": PRICE},
                        "current_period_start": now,
                        "current_period_end": now + 30 * 86400,
                    }
                ],
            },
        }
        body = json.dumps(
            {
                "object": "list",
                "data": [self.subscription],
                "has_more": False,
                "url": "/v1/subscriptions",
            }
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def signed(body: bytes, secret: str = SECRET) -> str:
    """A Stripe-Signature header, computed as Stripe does (v1: HMAC-SHA256 of "t.body")."""
    at = int(time.time())
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def show_billing(url: str) -> None:
    click.secho("\nBilling: the customer subscribes", bold=True)
    stripe_api = _DemoStripe()
    server = HttpServer(make_app(url, WebhookSettings(stripe_secret=SECRET)), bind("127.0.0.1", 0))
    server.start()
    try:
        event = {
            "id": "evt_demo_checkout",
            "object": "event",
            "type": "checkout.session.completed",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": "cs_demo",
                    "object": "checkout.session",
                    "customer": STRIPE_CUSTOMER,
                    "client_reference_id": CUSTOMER,
                    "subscription": "sub_Demo",
                }
            },
        }
        body = json.dumps(event).encode()
        endpoint = f"http://127.0.0.1:{server.port}/webhooks/stripe"
        request = urllib.request.Request(
            endpoint,
            data=body,
            headers={"Stripe-Signature": signed(body), "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.read().decode()
        click.secho("11. POST /webhooks/stripe checkout.session.completed (signed)", bold=True)
        click.echo(f"   {response.status} {answer}")

        click.secho("12. the worker re-fetches the subscription from (a local) Stripe", bold=True)
        handler = StripeSyncHandler(make_client("sk_test_demo", stripe_api.url, timeout=5))
        stats = Worker(url, [handler], WorkerSettings(drain=True)).run().as_dict()
        click.echo(f"   sync jobs: {stats['succeeded']} succeeded, {stats['dead']} dead")
    finally:
        server.stop()
        stripe_api.close()

    with db.connect(url, autocommit=True) as conn:
        plan = conn.execute(
            "SELECT plan, plan_source, plan_external_ref FROM skene.customers "
            "WHERE customer_id = %s",
            (CUSTOMER,),
        ).fetchone()
        click.secho("13. the customer is on the paid plan and unblocked", bold=True)
        click.echo(format_table(["plan", "source", "subscription"], [plan or ("-", "-", "-")]))
        decision = conn.execute(
            "SELECT allowed, reason, plan, used, usage_limit "
            "FROM skene.check_and_increment(%s, 'api_calls')",
            (CUSTOMER,),
        ).fetchone()
        click.echo(format_table(["allowed", "reason", "plan", "used", "limit"], [decision or ()]))

        click.secho("14. skene-pg report (skene.funnel)", bold=True)
        rows = queries.funnel(conn)
    print_funnel(rows)
