"""`skene-pg billing ...` and `skene-pg report`, and what `skene-pg listen` needs for
billing: the Stripe handlers and the webhook server. Thin: reads options and the
environment, calls, prints."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import click

from skene_pg import db
from skene_pg import queue as q
from skene_pg.billing import queries
from skene_pg.cli_support import database_url_option, fails_cleanly
from skene_pg.tables import format_table

log = logging.getLogger("skene_pg.worker")


def billing_handlers(env: Mapping[str, str]) -> list[Any]:
    """The Stripe job handlers when STRIPE_API_KEY is set (STRIPE_API_URL points the
    SDK elsewhere); without a key, billing jobs wait in the queue."""
    from skene_pg.billing.stripe_jobs import StripeMeterHandler, StripeSyncHandler, make_client

    key = env.get("STRIPE_API_KEY")
    if not key:
        log.info("STRIPE_API_KEY is not set: Stripe sync and meter jobs wait in the queue")
        return []
    client = make_client(key, env.get("STRIPE_API_URL") or None)
    return [StripeSyncHandler(client), StripeMeterHandler(client)]


def start_webhook_server(url: str, address: str, env: Mapping[str, str]) -> Any:
    from skene_pg.billing.webhooks import WebhookServer, WebhookSettings, make_app, parse_address

    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--http") from exc
    settings = WebhookSettings(
        stripe_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
        resend_secret=env.get("RESEND_WEBHOOK_SECRET") or None,
    )
    if not settings.stripe_secret and not settings.resend_secret:
        raise click.ClickException(
            "--http needs STRIPE_WEBHOOK_SECRET and/or RESEND_WEBHOOK_SECRET: without a "
            "secret no webhook can be verified"
        )
    server = WebhookServer(make_app(url, settings), host, port).start()
    log.info(
        "webhooks on http://%s:%d: %s",
        host,
        server.port,
        ", ".join(
            path
            for path, secret in (
                ("/webhooks/stripe", settings.stripe_secret),
                ("/webhooks/resend", settings.resend_secret),
            )
            if secret
        ),
    )
    return server


@click.group("billing")
def billing_group() -> None:
    """Billing: link customers to Stripe and re-sync their plans.

    Plans follow Stripe through `skene-pg listen --http` (webhooks) and
    STRIPE_API_KEY (the worker re-fetches each customer's subscription).

    \b
    Examples:
      skene-pg billing reconcile        # schedule it daily
      skene-pg billing link cus_42 cus_NffrFeUfNV2Hib
    """


@billing_group.command("reconcile")
@database_url_option
@fails_cleanly
def billing_reconcile(database_url: str | None) -> None:
    """Queue a re-sync of every linked Stripe customer (once per customer a day).

    The worker (`skene-pg listen` with STRIPE_API_KEY) re-fetches each subscription
    and applies it, catching webhooks that were lost.

    \b
    Example:
      skene-pg billing reconcile      # e.g. daily from cron
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


@click.command("report")
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for machines.")
@fails_cleanly
def report_command(database_url: str | None, as_json: bool) -> None:
    """How the loops do: per freemium loop the funnel (limit hits, upgrade prompts
    sent, conversions attributed to them, conversions per prompt), then the retention
    and milestone sections.

    \b
    Examples:
      skene-pg report
      skene-pg report --json      # {"funnel": [...], "retention": [...], ...}
    """
    retention = _retention_report()
    with db.connect(db.require_url(database_url)) as conn:
        rows = queries.funnel(conn)
        if as_json:
            out: dict[str, Any] = {"funnel": [{**r, "conversion_rate": _rate(r)} for r in rows]}
            if retention is not None:
                out.update(retention.report_json(conn))
            click.echo(q.to_json(out))
            return
        click.secho("Freemium: upgrade prompts and conversions", bold=True)
        print_funnel(rows)
        if retention is not None:
            retention.print_sections(conn)


def _retention_report() -> Any:
    try:
        from skene_pg.retention import report
    except ImportError:  # pragma: no cover - retention not installed
        return None
    return report


def print_funnel(rows: list[dict[str, Any]]) -> None:
    """skene.funnel as `skene-pg report` prints it (the demo prints it too)."""
    if not rows:
        click.echo("no freemium loops (add one to skene.toml and run skene-pg apply)")
        return
    click.echo(
        format_table(
            ["loop", "feature", "limit hits", "prompts sent", "conversions", "rate"],
            [
                (
                    r["loop_name"],
                    r["feature"],
                    r["limit_hits"],
                    r["prompts_sent"],
                    r["conversions"],
                    "-" if r["conversion_rate"] is None else f"{float(r['conversion_rate']):.1%}",
                )
                for r in rows
            ],
        )
    )


def _rate(row: Mapping[str, Any]) -> float | None:
    return None if row["conversion_rate"] is None else float(row["conversion_rate"])
