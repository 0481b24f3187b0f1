"""The Django app: system checks, the user -> customer sync, and dropping cached
settings and connections when tests change the settings."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class SkeneConfig(AppConfig):
    name = "skene_pg.django"
    label = "skene_pg"
    verbose_name = "skene-pg"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from skene_pg.django import checks, conf, users

        checks.register()
        users.connect()

        def on_setting_changed(setting: str, **kwargs: Any) -> None:
            if setting in ("SKENE", "DATABASES"):
                conf.reset()

        setting_changed.connect(on_setting_changed, weak=False, dispatch_uid="skene_pg.reset")
