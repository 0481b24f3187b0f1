"""`skene-pg apply`: validate skene.toml and make the database match it."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import click

from skene_pg import db
from skene_pg.cli.common import FAILED, CommandError, database_url_option, fails_cleanly
from skene_pg.cli.output import advice_json, advice_lines
from skene_pg.config import ApplyRefused, ConfigError, apply_with_warnings, load_config


@click.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), default="skene.toml")
@click.option("--dry-run", is_flag=True, help="Show what would change and change nothing.")
@click.option(
    "--prune", is_flag=True, help="Also delete plans and features the file no longer lists."
)
@click.option("--json", "as_json", is_flag=True, help="Print the changes (or problems) as JSON.")
@database_url_option
@fails_cleanly
def apply_command(
    file: Path, dry_run: bool, prune: bool, as_json: bool, database_url: str | None
) -> None:
    """Validate FILE (default: skene.toml) and apply it in one transaction.

    Every mistake in the file is reported with its line and field, and then nothing
    is applied. Applying the same file twice changes nothing. Plans and features
    missing from the file are only deleted with --prune (a plan that still has
    customers never is); changing a feature's period restarts its usage counters.

    Retention loops are then scheduled with pg_cron. Where this role cannot (pg_cron not
    running, not installed, or not granted), they go to `skene-pg listen` and a warning
    names the GRANT an admin would run; the apply itself still succeeds.

    \b
    Examples:
      skene-pg apply skene.toml --dry-run     # what would change
      skene-pg apply skene.toml
      skene-pg apply skene.toml --prune       # also delete what the file dropped
    """
    try:
        config = load_config(file)
    except ConfigError as exc:
        if as_json:
            click.echo(
                json.dumps({"problems": [{**asdict(p), "file": str(p.file)} for p in exc.problems]})
            )
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        count = len(exc.problems)
        click.echo(
            f"{count} problem{'s' if count != 1 else ''} in {file}: nothing applied", err=True
        )
        sys.exit(FAILED)
    from skene_pg.retention.templates import template_problems

    mistakes = template_problems(config, os.environ.get("SKENE_TEMPLATES_DIR"))
    if mistakes:
        for mistake in mistakes:
            click.echo(mistake, err=True)
        click.echo(f"{len(mistakes)} template problem(s) in {file}: nothing applied", err=True)
        sys.exit(FAILED)
    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        try:
            applied = apply_with_warnings(conn, config, dry_run=dry_run, prune=prune)
        except ApplyRefused as exc:
            raise CommandError(str(exc)) from exc
    changes = applied.changes
    if as_json:
        click.echo(
            json.dumps(
                {
                    "file": str(file),
                    "dry_run": dry_run,
                    "changes": [asdict(c) for c in changes],
                    "warnings": [advice_json(w) for w in applied.warnings],
                }
            )
        )
        return
    for warning in applied.warnings:
        for line in advice_lines(warning, "warning"):
            click.echo(line, err=True)
    for change in changes:
        click.echo(f"would {change}" if dry_run else str(change))
    if not changes:
        click.echo(f"nothing to change: the database matches {file}")
    elif dry_run:
        click.echo(f"dry run: {len(changes)} changes would be applied; nothing was changed")
    else:
        click.echo(f"applied {len(changes)} changes from {file}")
