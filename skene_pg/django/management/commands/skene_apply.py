"""manage.py skene_apply [FILE] [--dry-run] [--prune] [--json]: `skene-pg apply` on the
database of settings.SKENE (FILE defaults to SKENE["CONFIG"])."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from skene_pg.django import conf
from skene_pg.django.management.commands._cli import run_cli


class Command(BaseCommand):
    help = "Validate skene.toml and apply it (plans, features, limits, loops) in one transaction."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", help='default: SKENE["CONFIG"] or skene.toml')
        parser.add_argument("--dry-run", action="store_true", help="show what would change")
        parser.add_argument("--prune", action="store_true", help="allow deleting plans/features")
        parser.add_argument("--json", action="store_true", help="print the changes as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        flags = [
            f"--{name.replace('_', '-')}" for name in ("dry_run", "prune", "json") if options[name]
        ]
        run_cli("apply", options["file"] or conf.settings().config, *flags)
