"""`skene-pg init`: propose a commented skene.toml from the app's database (and code)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from skene_pg import db
from skene_pg.cli.common import FAILED, CommandError, database_url_option, fails_cleanly


@click.command("init")
@database_url_option
@click.option(
    "--app-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The app's code: API routes become features with `match` "
    "(Django urls.py, FastAPI decorators, Next.js app/api/**/route.ts).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the proposal to FILE instead of printing it.",
)
@click.option("--force", is_flag=True, help="Overwrite FILE when it exists.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print {toml, recognised} as one JSON object."
)
@fails_cleanly
def init_command(
    database_url: str | None,
    app_dir: Path | None,
    output: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Propose a skene.toml for an existing app, from its database (and its code).

    Recognises users tables (Django's auth_user and custom user models, Prisma's
    "User", Rails-style users), subscriptions (dj-stripe, Prisma's "Subscription", a
    plain subscriptions table), events tables, a last-activity column, and tables a
    user owns rows of (count limits). Plans come from the subscriptions' prices or plan
    values. Every guess is explained in a comment. Nothing is written to the database.

    \b
    Examples:
      skene-pg init                                  # print the proposal
      skene-pg init --app-dir . --output skene.toml  # with the app's API routes
      skene-pg apply skene.toml --dry-run            # then check it against the database
    """
    from skene_pg.proposal import NothingToPropose, propose

    if output is not None and output.exists() and not force:
        raise CommandError(f"{output} exists: pass --force to overwrite it")
    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        try:
            proposal = propose(conn, app_dir)
        except NothingToPropose as exc:
            raise CommandError(str(exc), FAILED) from exc
    if output is not None:
        output.write_text(proposal.text, encoding="utf-8")
    if as_json:
        click.echo(json.dumps({"toml": proposal.text, "recognised": proposal.summary()}))
    elif output is not None:
        click.echo(f"wrote {output}: check its guesses, then skene-pg apply {output} --dry-run")
    else:
        click.echo(proposal.text, nl=False)
