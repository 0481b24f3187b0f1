"""What billing registers with the job runtime: the Stripe handlers (plan sync by
re-fetch, metered usage), and the daily reconcile that catches lost webhooks."""

from __future__ import annotations

import logging

from skene_pg.jobs.kinds import Handler

log = logging.getLogger(__name__)


def handlers(stripe_api_key: str | None, stripe_api_url: str | None = None) -> list[Handler]:
    """The Stripe job handlers when a key is given (stripe_api_url points the SDK at
    another server, e.g. stripe-mock); without one, billing jobs wait in the queue."""
    from skene_pg.billing.stripe_jobs import StripeMeterHandler, StripeSyncHandler, make_client

    if not stripe_api_key:
        log.info("STRIPE_API_KEY is not set: Stripe sync and meter jobs wait in the queue")
        return []
    client = make_client(stripe_api_key, stripe_api_url or None)
    return [StripeSyncHandler(client), StripeMeterHandler(client)]
