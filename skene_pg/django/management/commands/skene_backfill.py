"""manage.py skene_backfill: identify() every existing user (email, name, time zone
as SKENE["USER_FIELDS"] names them), for users created before skene_pg.django."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from skene_pg.django.users import identify_user
from skene_pg.errors import SkeneError


class Command(BaseCommand):
    help = "Send every existing user's contact details to skene (skene.identify)."

    def handle(self, *args: Any, **options: Any) -> None:
        done, failed = 0, 0
        for user in get_user_model()._default_manager.order_by("pk").iterator(chunk_size=500):
            try:
                identify_user(user)
                done += 1
            except SkeneError as exc:
                failed += 1
                self.stderr.write(f"user {user.pk}: {exc}")
        self.stdout.write(f"identified {done} users" + (f", {failed} failed" if failed else ""))
        if failed:
            raise CommandError(f"{failed} users could not be identified")
