"""POST /webhooks/resend: the Svix signature is verified (RESEND_WEBHOOK_SECRET) and
its timestamp must be within 300 s of now, either way; email.bounced,
email.complained and email.suppressed put the recipients on the suppression list
(skene.suppress), which the worker honours at send time."""

from __future__ import annotations

import logging

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError

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

PATH = "/webhooks/resend"
TOLERANCE = 300  # seconds, either way (Svix's own check is 5 minutes both ways too)
SUPPRESSING = {
    "email.bounced": "bounce",
    "email.complained": "complaint",
    "email.suppressed": "bounce",  # Resend suppresses after a hard bounce or a complaint
}


def suppress(conn: psycopg.Connection, email: str, reason: str, source: str) -> None:
    conn.execute("SELECT skene.suppress(%s, %s, %s)", (email, reason, source))


def resend_route(database: Database, secret: str) -> Route:
    verifier = SvixWebhook(secret)

    async def resend_webhook(request: Request) -> JSONResponse:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        stamp = headers.get("svix-timestamp", headers.get("webhook-timestamp", ""))
        if stamp.isdigit() and (problem := timestamp_problem(int(stamp), TOLERANCE)):
            return bad_request(problem)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return bad_request("the body is not UTF-8")
        try:
            verifier.verify(text, headers)
        except (WebhookVerificationError, ValueError):  # ValueError: a malformed header
            log.warning("resend webhook: signature verification failed")
            return bad_request("invalid signature or timestamp")
        try:
            payload = parse_json(body)
        except BadBody as exc:
            return bad_request(str(exc))
        if not isinstance(payload, dict):
            return bad_request("not a Resend event")
        reason = SUPPRESSING.get(str(payload.get("type")))
        if reason is None:
            return JSONResponse({"received": True, "ignored": True})
        data = payload.get("data")
        to = (data if isinstance(data, dict) else {}).get("to") or []
        if isinstance(to, str):
            to = [to]
        addresses = [a for a in to if isinstance(a, str)] if isinstance(to, list) else []

        def suppress_all(conn: psycopg.Connection) -> None:
            with conn.transaction():
                for address in addresses:
                    suppress(conn, address, reason, "resend")

        try:
            await database.run(suppress_all)
        except Busy as exc:
            return unavailable(str(exc))
        except psycopg.DataError as exc:
            return bad_request(str(exc.diag.message_primary or exc))
        log.info("resend %s: %d address(es) suppressed", payload.get("type"), len(addresses))
        return JSONResponse({"received": True, "suppressed": len(addresses)})

    return Route(PATH, resend_webhook, methods=["POST"])
