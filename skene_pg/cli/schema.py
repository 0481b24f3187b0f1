"""`skene-pg migrate`: create, upgrade or downgrade the skene schema, or print its SQL."""

from __future__ import annotations

import sys

import click

from skene_pg import db, migrations
from skene_pg.cli.common import NO, database_url_option, fails_cleanly
from skene_pg.cli.output import to_json


@click.command("migrate")
@database_url_option
@click.option(
    "--sql",
    "as_sql",
    is_flag=True,
    help="Print the SQL instead of running it (for Django, Rails, Flyway, ...).",
)
@click.option(
    "--downgrade",
    "downgrade_to",
    metavar="REVISION",
    help="Downgrade to REVISION ('base' removes everything but the empty schema).",
)
@click.option(
    "--from",
    "from_revision",
    metavar="REVISION",
    help="With --sql: the revision the database is at now (default: none).",
)
@click.option(
    "--no-transaction",
    is_flag=True,
    help="With --sql: leave out BEGIN/COMMIT, for tools that wrap each migration in "
    "their own transaction (Django's RunSQL, Flyway, ...).",
)
@click.option(
    "--status",
    "show_status",
    is_flag=True,
    help="Show the current revision, the newest and what is pending; change nothing. "
    "Exits 3 when something is pending.",
)
@click.option("--json", "as_json", is_flag=True, help="With --status: one JSON object.")
@fails_cleanly
def migrate(
    database_url: str | None,
    as_sql: bool,
    downgrade_to: str | None,
    from_revision: str | None,
    no_transaction: bool,
    show_status: bool,
    as_json: bool,
) -> None:
    """Create or upgrade the `skene` schema to the newest revision.

    Idempotent: running it on an up-to-date database changes nothing. alembic's
    version table is kept in the skene schema, so your app's own alembic_version is
    never touched.

    \b
    Examples:
      skene-pg migrate --database-url postgresql://app@localhost/app
      skene-pg migrate --sql > skene.sql            # review or hand to your tool
      skene-pg migrate --sql --from 0001            # only what comes after 0001
      skene-pg migrate --sql --no-transaction       # inside your tool's transaction
      skene-pg migrate --status                     # current, head, pending
      skene-pg migrate --downgrade base

    \b
    --status --json prints {"current": ..., "head": ..., "pending": [...],
    "up_to_date": bool}; current is null when the schema is not installed.
    """
    if as_sql:
        transaction = not no_transaction
        if downgrade_to:
            start = from_revision or migrations.head_revision()
            click.echo(
                migrations.downgrade_sql(start, downgrade_to, transaction=transaction), nl=False
            )
        else:
            click.echo(migrations.upgrade_sql(from_revision, transaction=transaction), nl=False)
        return
    if no_transaction:
        raise click.UsageError("--no-transaction goes with --sql")
    url = db.require_url(database_url)
    if show_status:
        _print_status(migrations.status(url), as_json)
        return
    before = migrations.current_revision(url)
    if downgrade_to:
        migrations.downgrade(url, downgrade_to)
    else:
        migrations.upgrade(url)
    after = migrations.current_revision(url)
    if before == after:
        click.echo(f"skene schema already at {after or 'base'}: nothing to do")
    else:
        click.echo(f"skene schema migrated: {before or 'base'} -> {after or 'base'}")


def _print_status(found: migrations.MigrationStatus, as_json: bool) -> None:
    if as_json:
        click.echo(
            to_json(
                {
                    "current": found.current,
                    "head": found.head,
                    "pending": found.pending,
                    "up_to_date": found.up_to_date,
                }
            )
        )
    else:
        click.echo(f"current  {found.current or '-  (not installed)'}")
        click.echo(f"head     {found.head}")
        if found.newer_than_code:
            click.echo("pending  -  (the database is newer than this skene-pg: upgrade it)")
        else:
            click.echo(f"pending  {', '.join(found.pending) or '-'}")
    if not found.up_to_date:
        sys.exit(NO)
