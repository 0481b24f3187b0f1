"""What billing registers with the job runtime: the Stripe handlers (plan sync by
re-fetch, metered usage), and the daily reconcile that catches lost webhooks."""

from __future__ import annotations

import logging

import psycopg

from skene_pg.jobs import periodic
from skene_pg.jobs.kinds import Handler, PeriodicTask

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


RECONCILE_TASK = "billing reconcile"


def reconcile(conn: psycopg.Connection) -> tuple[int, int]:
    """Queue a re-sync of every linked Stripe customer; (queued, linked)."""
    from skene_pg.billing.queries import enqueue_reconcile

    queued, linked = enqueue_reconcile(conn)
    log.info("billing reconcile: queued %d sync job(s) for %d linked customer(s)", queued, linked)
    return queued, linked


def periodic_tasks(
    stripe_api_key: str | None, probe_every: float = periodic.PROBE_EVERY
) -> list[PeriodicTask]:
    """The daily reconcile, once across all workers, on workers that sync with Stripe
    (without a key its jobs would only wait in the queue)."""
    if not stripe_api_key:
        return []
    return [periodic.once_per_period(RECONCILE_TASK, periodic.DAY, reconcile, probe_every)]
