"""POST /webhooks/stripe: the Stripe-Signature header is verified with the stripe SDK
(STRIPE_WEBHOOK_SECRET, 300 s tolerance); the event goes into the billing inbox with
skene.ingest_billing_event (deduped by event id, its sync job queued in the same
transaction) and is answered 200. The sync itself runs in the worker."""

from __future__ import annotations

import json
import logging

import psycopg
import stripe
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from skene_pg.billing import queries
from skene_pg.http_server import Database, bad_request

log = logging.getLogger(__name__)

PATH = "/webhooks/stripe"
TOLERANCE = 300  # seconds


def stripe_route(database: Database, secret: str) -> Route:
    async def stripe_webhook(request: Request) -> JSONResponse:
        body = await request.body()
        signature = request.headers.get("stripe-signature")
        if not signature:
            return bad_request("missing Stripe-Signature header")
        try:
            # the SDK's webhook helper: v1 HMAC of "timestamp.body" and the tolerance
            stripe.WebhookSignature.verify_header(
                body.decode("utf-8"), signature, secret, TOLERANCE
            )
            payload = json.loads(body)
        except stripe.SignatureVerificationError:
            log.warning("stripe webhook: signature verification failed")
            return bad_request("invalid signature or timestamp")
        except ValueError:  # also a body that is not UTF-8
            return bad_request("the body is not JSON")
        if not isinstance(payload, dict) or not payload.get("id") or not payload.get("type"):
            return bad_request("not a Stripe event")
        try:
            new = await run_in_threadpool(
                database.run, lambda conn: queries.ingest_event(conn, "stripe", payload)
            )
        except psycopg.errors.InvalidParameterValue as exc:
            return bad_request(str(exc.diag.message_primary or exc))
        log.info("stripe event %s %s", payload["type"], "queued" if new else "seen before")
        return JSONResponse({"received": True, "duplicate": not new})

    return Route(PATH, stripe_webhook, methods=["POST"])
