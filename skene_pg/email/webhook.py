"""POST /webhooks/resend: the Svix signature is verified (RESEND_WEBHOOK_SECRET);
email.bounced, email.complained and email.suppressed put the recipients on the
suppression list (skene.suppress), which the worker honours at send time."""

from __future__ import annotations

import json
import logging

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError

from skene_pg.http_server import Database, bad_request

log = logging.getLogger(__name__)

PATH = "/webhooks/resend"
SUPPRESSING = {
    "email.bounced": "bounce",
    "email.complained": "complaint",
    "email.suppressed": "bounce",  # Resend suppresses after a hard bounce or a complaint
}


def suppress(conn: psycopg.Connection, email: str, reason: str, source: str) -> None:
    conn.execute("SELECT skene.suppress(%s, %s, %s)", (email, reason, source))


def resend_route(database: Database, secret: str) -> Route:
    async def resend_webhook(request: Request) -> JSONResponse:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            SvixWebhook(secret).verify(body, headers)
            payload = json.loads(body)
        except WebhookVerificationError:
            log.warning("resend webhook: signature verification failed")
            return bad_request("invalid signature or timestamp")
        except ValueError:
            return bad_request("the body is not JSON")
        if not isinstance(payload, dict):
            return bad_request("not a Resend event")
        reason = SUPPRESSING.get(str(payload.get("type")))
        if reason is None:
            return JSONResponse({"received": True, "ignored": True})
        to = (payload.get("data") or {}).get("to") or []
        addresses = [to] if isinstance(to, str) else [a for a in to if isinstance(a, str)]

        def suppress_all(conn: psycopg.Connection) -> None:
            with conn.transaction():
                for address in addresses:
                    suppress(conn, address, reason, "resend")

        await run_in_threadpool(database.run, suppress_all)
        log.info("resend %s: %d address(es) suppressed", payload.get("type"), len(addresses))
        return JSONResponse({"received": True, "suppressed": len(addresses)})

    return Route(PATH, resend_webhook, methods=["POST"])
