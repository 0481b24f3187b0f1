"""`skene-pg billing ...`: link customers to Stripe and queue re-syncs."""

from __future__ import annotations

import logging

import click

from skene_pg import db
from skene_pg.billing import queries
from skene_pg.cli.common import database_url_option, fails_cleanly

log = logging.getLogger("skene_pg.worker")


@click.group("billing")
def billing_group() -> None:
    """Billing: link customers to Stripe and re-sync their plans.

    Plans follow Stripe through `skene-pg listen --http` (webhooks) and
    STRIPE_API_KEY (the worker re-fetches each customer's subscription).

    \b
    Examples:
      skene-pg billing reconcile        # now; `skene-pg listen` does it daily
      skene-pg billing link cus_42 cus_NffrFeUfNV2Hib
    """


@billing_group.command("reconcile")
@database_url_option
@fails_cleanly
def billing_reconcile(database_url: str | None) -> None:
    """Queue a re-sync of every linked Stripe customer (once per customer a day).

    The worker (`skene-pg listen` with STRIPE_API_KEY) re-fetches each subscription
    and applies it, catching webhooks that were lost. It also queues this itself once
    a day, across all workers: run it by hand only to re-sync now.

    \b
    Example:
      skene-pg billing reconcile
    """
    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        queued, linked = queries.enqueue_reconcile(conn)
    click.echo(f"queued {queued} sync job(s) for {linked} linked Stripe customer(s)")


@billing_group.command("link")
@database_url_option
@click.argument("customer")
@click.argument("stripe_customer")
@fails_cleanly
def billing_link(database_url: str | None, customer: str, stripe_customer: str) -> None:
    """Link skene CUSTOMER to STRIPE_CUSTOMER (cus_...) and queue its sync.

    \b
    Example:
      skene-pg billing link cus_42 cus_NffrFeUfNV2Hib
    """
    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        queries.link_and_sync(conn, customer, stripe_customer)
    click.echo(f"linked {customer} to Stripe customer {stripe_customer}; its sync is queued")
