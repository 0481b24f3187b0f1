"""Run a `skene-pg` command against the database of settings.SKENE."""

from __future__ import annotations

from django.core.management.base import CommandError

from skene_pg.django import conf


def run_cli(*args: str) -> None:
    from skene_pg.cli import main

    command, *rest = args
    try:
        main.main(
            [command, "--database-url", conf.settings().database, *rest],
            prog_name="skene-pg",
            standalone_mode=True,
        )
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise CommandError(
                f"skene-pg {command} exited with {exit.code}", returncode=int(exit.code)
            ) from None
