"""The webhook endpoints `skene-pg listen --http` serves, put together: Stripe
(billing) and Resend (email), each only when its secret is set.

A bad or missing signature, an expired timestamp or a body that is not JSON is
answered 400 and stores nothing."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from skene_pg.billing.webhook import PATH as STRIPE_PATH
from skene_pg.billing.webhook import stripe_route
from skene_pg.email.webhook import PATH as RESEND_PATH
from skene_pg.email.webhook import resend_route
from skene_pg.http_server import Database


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


def make_app(database_url: str, settings: WebhookSettings) -> Starlette:
    database = Database(database_url)
    routes = [
        stripe_route(database, settings.stripe_secret)
        if settings.stripe_secret
        else _not_configured(STRIPE_PATH, "STRIPE_WEBHOOK_SECRET"),
        resend_route(database, settings.resend_secret)
        if settings.resend_secret
        else _not_configured(RESEND_PATH, "RESEND_WEBHOOK_SECRET"),
    ]
    return Starlette(routes=routes)


def _not_configured(path: str, setting: str) -> Route:
    async def endpoint(_request: object) -> JSONResponse:
        return JSONResponse({"error": f"{setting} is not set"}, status_code=503)

    return Route(path, endpoint, methods=["POST"])
