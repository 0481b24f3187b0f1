"""manage.py skene_listen [OPTIONS]: `skene-pg listen` (the worker that sends the
queued email and syncs Stripe) on the database of settings.SKENE. Every option is
passed through: `manage.py skene_listen --drain --outbox-dir outbox`."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from skene_pg.django.management.commands._cli import run_cli


class Command(BaseCommand):
    help = "Run the skene-pg worker (skene-pg listen) on the configured database."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        # Options this command doesn't know are skene-pg listen's: keep them for it.
        def parse_args(args: Any = None, namespace: Any = None) -> argparse.Namespace:
            known, rest = parser.parse_known_args(args, namespace)
            known.listen_args = rest
            return known

        parser.parse_args = parse_args
        return parser

    def handle(self, *args: Any, **options: Any) -> None:
        run_cli("listen", *options.get("listen_args", []))
