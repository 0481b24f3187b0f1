"""The `skene-pg` command: one module per command (group), each thin: it parses,
calls and prints. Shared options, exit codes and error handling: common.py."""

from __future__ import annotations

import inspect

import click

from skene_pg import __version__
from skene_pg.cli.apply import apply_command
from skene_pg.cli.billing import billing_group
from skene_pg.cli.common import EXIT_CODES_HELP
from skene_pg.cli.devdb import demo_command, dev_db
from skene_pg.cli.doctor import doctor_command
from skene_pg.cli.gate import check
from skene_pg.cli.housekeep import housekeep_command
from skene_pg.cli.init import init_command
from skene_pg.cli.jobs import jobs_group
from skene_pg.cli.listen import listen_command
from skene_pg.cli.loops import loops_group
from skene_pg.cli.report import report_command
from skene_pg.cli.schema import migrate
from skene_pg.cli.sources import sources_group
from skene_pg.cli.suppressions import suppressions_group
from skene_pg.cli.templates import templates_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="skene-pg")
def main() -> None:
    """skene-pg: usage limits, upgrade prompts, plan sync and retention loops inside
    your own PostgreSQL.

    \b
    Typical use:
      skene-pg init > skene.toml       # propose a config from the app's database
      skene-pg migrate                 # create or upgrade the skene schema
      skene-pg apply skene.toml        # plans, features, limits and loops
      psql -c "SELECT * FROM skene.check_and_increment('cus_1', 'api_calls')"
    """


main.help = f"{inspect.cleandoc(main.help or '')}\n\n{EXIT_CODES_HELP}"

for command in (
    init_command,
    migrate,
    apply_command,
    check,
    listen_command,
    jobs_group,
    loops_group,
    sources_group,
    suppressions_group,
    templates_group,
    billing_group,
    report_command,
    doctor_command,
    housekeep_command,
    dev_db,
    demo_command,
):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
