"""`skene-pg report`: how every loop does (skene_pg/report.py has the sections)."""

from __future__ import annotations

import click

from skene_pg import db
from skene_pg.cli.common import database_url_option, fails_cleanly
from skene_pg.cli.output import to_json


@click.command("report")
@database_url_option
@click.option(
    "--window-days",
    type=click.IntRange(1, 365),
    default=7,
    show_default=True,
    help="Reactivated means active again within this many days of a message.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for machines.")
@fails_cleanly
def report_command(database_url: str | None, window_days: int, as_json: bool) -> None:
    """How the loops do: per freemium loop the funnel (limit hits, upgrade prompts
    sent, conversions attributed to them, conversion rate), then retention
    (reactivated per arm, lift over the holdout, runs) and milestones.

    \b
    --json prints one object; every key is snake_case, times are ISO 8601:
      {"funnel":     [{loop_name, feature, limit_hits, prompts_sent,
                       conversions, conversion_rate}],
       "retention":  [{loop_name, arm, measured, reactivated, rate, open}],
       "lift":       [{loop_name, lift}],
       "runs":       [{loop_name, runs, failed, queued, held_out,
                       last_slot, last_error}],
       "milestones": [{loop_name, threshold, customers, emails_queued}]}

    \b
    Examples:
      skene-pg report
      skene-pg report --json | jq '.funnel'
    """
    from skene_pg.report import print_report, report_json

    with db.connect(db.require_url(database_url)) as conn:
        if as_json:
            click.echo(to_json(report_json(conn, window_days)))
        else:
            print_report(conn, window_days)
