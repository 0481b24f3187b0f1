"""`skene-pg migrate`: create, upgrade or downgrade the skene schema, or print its SQL."""

from __future__ import annotations

import click

from skene_pg import db, migrations
from skene_pg.cli.common import database_url_option, fails_cleanly


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
@fails_cleanly
def migrate(
    database_url: str | None, as_sql: bool, downgrade_to: str | None, from_revision: str | None
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
      skene-pg migrate --downgrade base
    """
    if as_sql:
        if downgrade_to:
            start = from_revision or migrations.head_revision()
            click.echo(migrations.downgrade_sql(start, downgrade_to), nl=False)
        else:
            click.echo(migrations.upgrade_sql(from_revision), nl=False)
        return
    url = db.require_url(database_url)
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
