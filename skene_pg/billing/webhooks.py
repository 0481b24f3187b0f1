"""`skene-pg listen --http HOST:PORT`: the webhook endpoints, a small Starlette app
served by uvicorn in a thread beside the worker.

- POST /webhooks/stripe: the Stripe-Signature header is verified with the stripe SDK
  (STRIPE_WEBHOOK_SECRET, 300 s tolerance); the event goes into the inbox with
  skene.ingest_billing_event (deduped by event id, its sync job queued in the same
  transaction) and is answered 200. The sync itself runs in the worker.
- POST /webhooks/resend: the Svix signature is verified (RESEND_WEBHOOK_SECRET);
  email.bounced, email.complained and email.suppressed put the recipients on the
  suppression list (skene.suppress), which the worker honours.

A bad or missing signature, an expired timestamp or a body that is not JSON is
answered 400 and stores nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import stripe
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError

from skene_pg import db
from skene_pg.billing import queries

log = logging.getLogger(__name__)

STRIPE_TOLERANCE = 300  # seconds
RESEND_SUPPRESSING = {
    "email.bounced": "bounce",
    "email.complained": "complaint",
    "email.suppressed": "bounce",  # Resend suppresses after a hard bounce or a complaint
}


@dataclass(frozen=True)
class WebhookSettings:
    stripe_secret: str | None = None
    resend_secret: str | None = None


def _bad(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=400)


def make_app(database_url: str, settings: WebhookSettings) -> Starlette:
    def with_conn(work: Callable[[psycopg.Connection], Any]) -> Any:
        # one short connection per delivery: webhooks are rare next to the gate
        with db.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            return work(conn)

    async def stripe_webhook(request: Request) -> JSONResponse:
        if not settings.stripe_secret:
            return JSONResponse({"error": "STRIPE_WEBHOOK_SECRET is not set"}, status_code=503)
        body = await request.body()
        signature = request.headers.get("stripe-signature")
        if not signature:
            return _bad("missing Stripe-Signature header")
        try:
            # the SDK's webhook helper: v1 HMAC of "timestamp.body" and the tolerance
            stripe.WebhookSignature.verify_header(
                body.decode("utf-8"), signature, settings.stripe_secret, STRIPE_TOLERANCE
            )
            payload = json.loads(body)
        except stripe.SignatureVerificationError:
            log.warning("stripe webhook: signature verification failed")
            return _bad("invalid signature or timestamp")
        except ValueError:  # also a body that is not UTF-8
            return _bad("the body is not JSON")
        if not isinstance(payload, dict) or not payload.get("id") or not payload.get("type"):
            return _bad("not a Stripe event")
        try:
            new = await run_in_threadpool(
                with_conn, lambda conn: queries.ingest_event(conn, "stripe", payload)
            )
        except psycopg.errors.InvalidParameterValue as exc:
            return _bad(str(exc.diag.message_primary or exc))
        log.info("stripe event %s %s", payload["type"], "queued" if new else "seen before")
        return JSONResponse({"received": True, "duplicate": not new})

    async def resend_webhook(request: Request) -> JSONResponse:
        if not settings.resend_secret:
            return JSONResponse({"error": "RESEND_WEBHOOK_SECRET is not set"}, status_code=503)
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            SvixWebhook(settings.resend_secret).verify(body, headers)
            payload = json.loads(body)
        except WebhookVerificationError:
            log.warning("resend webhook: signature verification failed")
            return _bad("invalid signature or timestamp")
        except ValueError:
            return _bad("the body is not JSON")
        if not isinstance(payload, dict):
            return _bad("not a Resend event")
        reason = RESEND_SUPPRESSING.get(str(payload.get("type")))
        if reason is None:
            return JSONResponse({"received": True, "ignored": True})
        to = (payload.get("data") or {}).get("to") or []
        addresses = [to] if isinstance(to, str) else [a for a in to if isinstance(a, str)]

        def suppress_all(conn: psycopg.Connection) -> None:
            with conn.transaction():
                for address in addresses:
                    queries.suppress(conn, address, reason, "resend")

        await run_in_threadpool(with_conn, suppress_all)
        log.info("resend %s: %d address(es) suppressed", payload.get("type"), len(addresses))
        return JSONResponse({"received": True, "suppressed": len(addresses)})

    return Starlette(
        routes=[
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
            Route("/webhooks/resend", resend_webhook, methods=["POST"]),
        ]
    )


class WebhookServer:
    """uvicorn serving the app in a daemon thread; `stop()` finishes open requests."""

    def __init__(self, app: Starlette, host: str, port: int):
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, name="skene-http", daemon=True)

    def start(self, timeout: float = 10.0) -> WebhookServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the webhook server did not start (is the port free?)")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", [])
        return int(servers[0].sockets[0].getsockname()[1]) if servers else 0

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--http wants HOST:PORT, e.g. 127.0.0.1:8787, got {value!r}")
    return host or "127.0.0.1", int(port)
