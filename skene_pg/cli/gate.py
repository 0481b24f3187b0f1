"""`skene-pg check`: ask the gate about a customer and feature from the shell."""

from __future__ import annotations

import sys

import click

from skene_pg import db
from skene_pg.cli.common import NO, OK, database_url_option, fails_cleanly
from skene_pg.cli.output import to_json


@click.command("check")
@database_url_option
@click.argument("customer")
@click.argument("feature")
@click.option("--amount", type=int, default=1, show_default=True, help="Units to count.")
@click.option(
    "--increment",
    is_flag=True,
    help="Count the usage (check_and_increment) instead of only asking (check).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@fails_cleanly
def check(
    database_url: str | None,
    customer: str,
    feature: str,
    amount: int,
    increment: bool,
    as_json: bool,
) -> None:
    """Ask whether CUSTOMER may use FEATURE (and with --increment, count it).

    Exits 0 when allowed and 3 when not, with or without --json. --json prints the
    decision as one object: allowed, reason, feature, plan, used, usage_limit,
    remaining (null: unlimited) and resets_at (ISO 8601, null: never).

    \b
    Examples:
      skene-pg check cus_42 api_calls --increment
      skene-pg check cus_42 api_calls --json || echo blocked
    """
    function = "check_and_increment" if increment else "check"
    with db.connect(db.require_url(database_url)) as conn:
        cursor = conn.execute(
            f"SELECT * FROM skene.{function}(%s, %s, %s)", (customer, feature, amount)
        )
        row = cursor.fetchone()
        names = [column.name for column in cursor.description or []]
    decision = dict(zip(names, row or (), strict=True))
    if as_json:
        click.echo(to_json(decision))
    else:
        for key, value in decision.items():
            click.echo(f"{key:>12}  {'' if value is None else value}")
    sys.exit(OK if decision.get("allowed") else NO)
