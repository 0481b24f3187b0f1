"""`skene-pg suppressions list|add|remove`: addresses that get no marketing email."""

from __future__ import annotations

import click
from psycopg.rows import dict_row

from skene_pg import db
from skene_pg.cli.common import database_url_option, fails_cleanly
from skene_pg.cli.output import format_table, to_json

REASONS = ("bounce", "complaint", "manual")


@click.group("suppressions")
def suppressions_group() -> None:
    """Addresses that never get marketing email again: bounces and complaints (from
    the Resend webhook) and the ones you add. The worker skips them at send time.

    \b
    Examples:
      skene-pg suppressions list
      skene-pg suppressions add ada@example.com
      skene-pg suppressions remove ada@example.com
    """


@suppressions_group.command("list")
@database_url_option
@click.option("--reason", type=click.Choice(REASONS), help="Only this reason.")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for machines.")
@fails_cleanly
def suppressions_list(
    database_url: str | None, reason: str | None, limit: int, as_json: bool
) -> None:
    """List suppressed addresses, newest first.

    \b
    --json prints an array of {email, reason, source, created_at}.
    """
    with db.connect(db.require_url(database_url)) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT email, reason, source, created_at FROM skene.suppressions "
            "WHERE %(reason)s::text IS NULL OR reason = %(reason)s "
            "ORDER BY created_at DESC, email LIMIT %(limit)s",
            {"reason": reason, "limit": limit},
        ).fetchall()
    if as_json:
        click.echo(to_json(rows))
    elif not rows:
        click.echo("no suppressed addresses")
    else:
        keys = ["email", "reason", "source", "created_at"]
        click.echo(format_table(keys, [[r[k] for k in keys] for r in rows]))


@suppressions_group.command("add")
@database_url_option
@click.argument("email")
@click.option("--reason", type=click.Choice(REASONS), default="manual", show_default=True)
@click.option("--source", default="cli", show_default=True, help="Who or what added it.")
@fails_cleanly
def suppressions_add(database_url: str | None, email: str, reason: str, source: str) -> None:
    """Stop all marketing email to EMAIL (the first reason recorded stays)."""
    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        conn.execute("SELECT skene.suppress(%s, %s, %s)", (email, reason, source))
    click.echo(f"suppressed {email.strip().lower()}")


@suppressions_group.command("remove")
@database_url_option
@click.argument("email")
@fails_cleanly
def suppressions_remove(database_url: str | None, email: str) -> None:
    """Allow marketing email to EMAIL again."""
    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        row = conn.execute("SELECT skene.unsuppress(%s)", (email,)).fetchone()
    click.echo(f"{email} was not suppressed" if not (row and row[0]) else f"unsuppressed {email}")
