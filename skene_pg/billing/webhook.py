"""POST /webhooks/stripe: the Stripe-Signature header is verified with the stripe SDK
(STRIPE_WEBHOOK_SECRET) and its timestamp must be within 300 s of now, either way;
the event goes into the billing inbox with skene.ingest_billing_event (deduped by
event id, its sync job queued in the same transaction) and is answered 200. The sync
itself runs in the worker."""

from __future__ import annotations

import logging

import psycopg
import stripe
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from skene_pg.billing import queries
from skene_pg.http_server import (
    BadBody,
    Busy,
    Database,
    bad_request,
    parse_json,
    timestamp_problem,
    unavailable,
)

log = logging.getLogger(__name__)

PATH = "/webhooks/stripe"
TOLERANCE = 300  # seconds, into the past and into the future


def signed_at(header: str) -> int | None:
    """The `t=` of a Stripe-Signature header."""
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return None


def stripe_route(database: Database, secret: str) -> Route:
    async def stripe_webhook(request: Request) -> JSONResponse:
        body = await request.body()
        signature = request.headers.get("stripe-signature")
        if not signature:
            return bad_request("missing Stripe-Signature header")
        # The SDK checks only that the timestamp is not too old; one from the future
        # would be as good as a replay, so both ways are checked here.
        at = signed_at(signature)
        if at is not None and (problem := timestamp_problem(at, TOLERANCE)):
            return bad_request(problem)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return bad_request("the body is not UTF-8")
        try:
            # the SDK's webhook helper: v1 HMAC of "timestamp.body" and the tolerance
            stripe.WebhookSignature.verify_header(text, signature, secret, TOLERANCE)
        except stripe.SignatureVerificationError:
            log.warning("stripe webhook: signature verification failed")
            return bad_request("invalid signature or timestamp")
        try:
            payload = parse_json(body)
        except BadBody as exc:
            return bad_request(str(exc))
        if not isinstance(payload, dict) or not payload.get("id") or not payload.get("type"):
            return bad_request("not a Stripe event")
        try:
            new = await database.run(lambda conn: queries.ingest_event(conn, "stripe", payload))
        except Busy as exc:
            return unavailable(str(exc))
        except psycopg.DataError as exc:  # the event itself (22xxx): sending again won't help
            return bad_request(str(exc.diag.message_primary or exc))
        log.info("stripe event %s %s", payload["type"], "queued" if new else "seen before")
        return JSONResponse({"received": True, "duplicate": not new})

    return Route(PATH, stripe_webhook, methods=["POST"])
