"""`skene-pg doctor`: check a deployment and print each finding with its fix."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict

import click

from skene_pg import db
from skene_pg.cli.common import NO, database_url_option, fails_cleanly
from skene_pg.cli.email_options import (
    email_provider_option,
    email_settings,
    link_options,
    listen_database_url_option,
    outbox_dir_option,
)
from skene_pg.cli.output import advice_lines, to_json
from skene_pg.doctor import ListenSettings, diagnose, exit_blocked


@click.command("doctor")
@database_url_option
@listen_database_url_option
@email_provider_option
@link_options
@outbox_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@fails_cleanly
def doctor_command(
    database_url: str | None,
    listen_database_url: str | None,
    email_provider: str,
    email_from: str | None,
    app_url: str | None,
    upgrade_url: str | None,
    unsubscribe_url: str | None,
    outbox_dir: str,
    as_json: bool,
) -> None:
    """Check the deployment at --database-url: what would stop skene-pg, and the SQL
    or setting that fixes it. Exits 3 when something blocks, 0 otherwise.

    It looks at the schema's revision against this skene-pg; the roles skene_app,
    skene_worker (and any other the schema defines) and which are granted to you; your
    privileges (owner of schema skene? CREATE on the database?); pg_cron (installed?
    running? in which database? may you schedule there?) and whether every retention
    loop runs somewhere; whether a transaction pooler is in front (then `listen` needs
    SKENE_LISTEN_DATABASE_URL); and the email and Stripe settings `skene-pg listen`
    would use, read from the same options and environment variables (secrets are
    reported as set or not, never printed). It changes nothing.

    \b
    Examples:
      skene-pg doctor
      skene-pg doctor --json | jq '.findings[] | select(.status != "ok")'
      SKENE_EMAIL_PROVIDER=resend skene-pg doctor   # as the worker would run
    """
    from skene_pg.email.base import ConfigError

    try:
        # the very check listen makes; its warning about the unsubscribe secret becomes
        # a finding instead of a log line
        logging.getLogger("skene_pg.worker").disabled = True
        email_settings(email_provider, email_from, app_url, upgrade_url, unsubscribe_url)
        links_error = None
    except ConfigError as exc:
        links_error = str(exc)
    finally:
        logging.getLogger("skene_pg.worker").disabled = False
    listen = ListenSettings(
        email_provider=email_provider,
        email_from=email_from,
        app_url=app_url,
        upgrade_url=upgrade_url,
        unsubscribe_url=unsubscribe_url,
        outbox_dir=outbox_dir,
        listen_database_url=listen_database_url,
        links_error=links_error,
    )
    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        findings = diagnose(conn, listen, os.environ)
    blockers = sum(f.status == "blocker" for f in findings)
    warnings = sum(f.status == "warning" for f in findings)
    if as_json:
        click.echo(
            to_json(
                {
                    "ok": not blockers,
                    "blockers": blockers,
                    "warnings": warnings,
                    "findings": [asdict(f) for f in findings],
                }
            )
        )
    else:
        for finding in findings:
            for line in advice_lines(finding, f"{finding.status:<7} {finding.check}"):
                click.echo(line)
        click.echo(
            f"{blockers} blocker{'s' if blockers != 1 else ''}, "
            f"{warnings} warning{'s' if warnings != 1 else ''}"
        )
    if exit_blocked(findings):
        raise SystemExit(NO)
