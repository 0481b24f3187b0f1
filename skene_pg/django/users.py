"""Customer data from the user model: skene.identify on every save of a user (after
the transaction commits), and for existing users with `manage.py skene_backfill`.
SKENE["USER_FIELDS"] names the email, name and time zone attributes (a method is
called); SKENE["CUSTOMER_OF_USER"] maps a user to its customer id."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings as django_settings
from django.db import transaction
from django.db.models.signals import post_save

from skene_pg.django import conf
from skene_pg.errors import SkeneError

log = logging.getLogger("skene_pg.django.users")


def field_value(user: Any, attribute: str | None) -> str | None:
    if not attribute:
        return None
    value = getattr(user, attribute, None)
    if callable(value):
        value = value()
    # identify() keeps the stored value for NULL; an empty field is no information
    return str(value) if value not in (None, "") else None


def identify_user(user: Any) -> None:
    """identify() one user; raises SkeneError."""
    settings = conf.settings()
    fields = settings.user_fields
    conf.client().identify(
        settings.customer_of_user(user),
        email=field_value(user, fields.get("email")),
        name=field_value(user, fields.get("name")),
        timezone=field_value(user, fields.get("timezone")),
    )


def _after_commit(user: Any) -> None:
    try:
        identify_user(user)
    except SkeneError as exc:
        log.warning("skene: identify of user %s failed: %r", user.pk, exc)


def user_saved(
    sender: Any,
    instance: Any,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    if raw or not conf.settings().sync_users:
        return  # loaddata, or switched off
    watched = {a for a in conf.settings().user_fields.values() if a}
    if update_fields is not None and not watched & set(update_fields):
        return  # e.g. last_login on every sign-in: nothing skene keeps changed
    # After commit: a rolled-back save must not reach skene (its own connection).
    transaction.on_commit(lambda: _after_commit(instance), using=using)


def connect() -> None:
    post_save.connect(
        user_saved, sender=django_settings.AUTH_USER_MODEL, dispatch_uid="skene_pg.user_saved"
    )
