"""`skene-pg templates ...`: list the email templates and preview one for a customer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from skene_pg import db
from skene_pg.cli.common import database_url_option, fails_cleanly
from skene_pg.cli.email_options import email_settings, link_options, templates_option
from skene_pg.email import context as email_context


@click.group("templates")
def templates_group() -> None:
    """Email templates: the defaults (upgrade_prompt, re_engagement, milestone) and your
    overrides (--templates DIR: NAME.subject.txt, NAME.html and NAME.txt).

    \b
    Example:
      skene-pg templates preview upgrade_prompt --customer cus_42
    """


@templates_group.command("list")
@templates_option
def templates_list(templates_dir: Path | None) -> None:
    """List the templates there are (defaults and overrides).

    \b
    Example:
      skene-pg templates list --templates ./emails
    """
    from skene_pg.email.templates import TemplateRenderer

    for name in TemplateRenderer(templates_dir).names():
        click.echo(name)


@templates_group.command("preview")
@database_url_option
@click.argument("name")
@click.option("--customer", "customer_id", required=True, help="Render for this customer.")
@click.option(
    "--feature",
    help="Sample usage of this feature (when the customer has no job of this template yet).",
)
@templates_option
@link_options
@click.option("--html", "show_html", is_flag=True, help="Print the HTML part too.")
@fails_cleanly
def templates_preview(
    database_url: str | None,
    name: str,
    customer_id: str,
    feature: str | None,
    templates_dir: Path | None,
    email_from: str | None,
    app_url: str | None,
    upgrade_url: str | None,
    unsubscribe_url: str | None,
    show_html: bool,
) -> None:
    """Render template NAME for a customer, as the worker would, to the terminal.

    It uses the customer's latest job of this template, or else sample usage. A
    missing variable is reported as the worker would record it on the job.

    \b
    Example:
      skene-pg templates preview upgrade_prompt --customer cus_42 --html
    """
    from skene_pg.email.handler import compose, skip_reason
    from skene_pg.email.templates import TemplateFailure, TemplateRenderer

    settings = email_settings("outbox", email_from, app_url, upgrade_url, unsubscribe_url)
    with db.connect(db.require_url(database_url)) as conn:
        context = email_context.customer_context(conn, customer_id)
        if context is None:
            raise click.ClickException(f"no customer {customer_id!r}")
        job = email_context.latest_email_job(conn, customer_id, name)
        if job is not None:
            payload = job["payload"]
            context |= {"loop_type": job["loop_type"], "loop_config": job["loop_config"]}
            loop_name, key = job["loop_name"], job["idempotency_key"]
            click.echo(f"(job {job['id']})", err=True)
        else:
            payload = _sample_payload(conn, name, context, feature)
            loop_name, key = None, "preview"
            click.echo("(no job of this template yet: sample usage)", err=True)
    reason = skip_reason(context, payload, customer_id)
    if reason:
        click.echo(f"(at send time this email would be skipped: {reason})", err=True)
    if not context.get("email"):
        context["email"] = "no-address@example.invalid"
    try:
        email = compose(
            0,
            customer_id,
            key,
            payload,
            context,
            loop_name,
            TemplateRenderer(templates_dir),
            settings,
        )
    except TemplateFailure as exc:
        raise click.ClickException(exc.reason) from exc
    click.echo(f"From: {email.sender}\nTo: {email.to}\nSubject: {email.subject}")
    for header, value in email.headers.items():
        click.echo(f"{header}: {value}")
    click.echo("")
    click.echo(email.text.rstrip("\n"))
    if show_html:
        click.echo("\n----- HTML -----")
        click.echo(email.html.rstrip("\n"))


def _sample_payload(
    conn: Any, template: str, context: dict[str, Any], feature: str | None
) -> dict[str, Any]:
    row = conn.execute(
        "SELECT f.feature, l.usage_limit, u.resets_at "
        "  FROM skene.features f "
        "  LEFT JOIN skene.feature_limits l ON l.feature = f.feature AND l.plan = %(plan)s "
        "  LEFT JOIN skene.usage u ON u.feature = f.feature AND u.customer_id = %(customer)s "
        " WHERE %(feature)s::text IS NULL OR f.feature = %(feature)s "
        " ORDER BY (l.usage_limit IS NULL), f.feature LIMIT 1",
        {"plan": context["plan"], "customer": context["customer_id"], "feature": feature},
    ).fetchone()
    if row is None:
        raise click.ClickException(
            f"no feature {feature!r}" if feature else "no features defined (run skene-pg apply)"
        )
    limit = row[1] if row[1] is not None else 100
    return {
        "template": template,
        "feature": row[0],
        "reason": "limit_reached",
        "plan": context["plan"],
        "used": limit,
        "usage_limit": limit,
        "requested": 1,  # as the gate queues it: one more call, past the limit
        "resets_at": row[2].isoformat() if row[2] else None,
    }
