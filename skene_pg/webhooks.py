"""The webhook endpoints `skene-pg listen --http` serves, put together: Stripe
(billing) and Resend (email), each only when its secret is set; and the program of
the webhook server's own process (`python -m skene_pg.webhooks`, started by
`http_process.WebhookProcess`).

A bad or missing signature, a timestamp outside the tolerance (either way), or a body
that is not JSON PostgreSQL can store is answered 400 and stores nothing; a body over
the limit 413; no database connection in time 503 with Retry-After."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from skene_pg.billing.webhook import PATH as STRIPE_PATH
from skene_pg.billing.webhook import stripe_route
from skene_pg.email.webhook import PATH as RESEND_PATH
from skene_pg.email.webhook import resend_route
from skene_pg.http_process import run_child
from skene_pg.http_server import BodyGuard, Database, HttpLimits
from skene_pg.logs import setup_logging


@dataclass(frozen=True)
class WebhookSettings:
    stripe_secret: str | None = None
    resend_secret: str | None = None

    def paths(self) -> list[str]:
        """The endpoints that are on."""
        return [
            path
            for path, secret in (
                (STRIPE_PATH, self.stripe_secret),
                (RESEND_PATH, self.resend_secret),
            )
            if secret
        ]


def make_app(
    database_url: str, settings: WebhookSettings, limits: HttpLimits | None = None
) -> Starlette:
    """The endpoints behind BodyGuard, with their database pool opened and closed by
    the app's lifespan."""
    limits = limits or HttpLimits()
    database = Database(database_url, limits)
    routes = [
        stripe_route(database, settings.stripe_secret)
        if settings.stripe_secret
        else _not_configured(STRIPE_PATH, "STRIPE_WEBHOOK_SECRET"),
        resend_route(database, settings.resend_secret)
        if settings.resend_secret
        else _not_configured(RESEND_PATH, "RESEND_WEBHOOK_SECRET"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        database.open()
        try:
            yield
        finally:
            database.close()

    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyGuard, limits=limits)],
        lifespan=lifespan,
    )


def _not_configured(path: str, setting: str) -> Route:
    async def endpoint(_request: object) -> JSONResponse:
        return JSONResponse({"error": f"{setting} is not set"}, status_code=503)

    return Route(path, endpoint, methods=["POST"])


def child_settings(
    database_url: str, settings: WebhookSettings, limits: HttpLimits, log_level: str, log_json: bool
) -> dict[str, Any]:
    """What the server process needs, as WebhookProcess sends it (on a pipe, never in
    the environment or the command line)."""
    return {
        "database_url": database_url,
        "webhooks": asdict(settings),
        "limits": asdict(limits),
        "log_level": log_level,
        "log_json": log_json,
    }


def _child_app(settings: dict[str, Any], limits: HttpLimits) -> Starlette:
    setup_logging(settings["log_level"], settings["log_json"])
    return make_app(settings["database_url"], WebhookSettings(**settings["webhooks"]), limits)


if __name__ == "__main__":
    run_child(_child_app)
