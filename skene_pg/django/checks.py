"""System checks: GateMiddleware must come after AuthenticationMiddleware (it needs
request.user) and CsrfViewMiddleware (a forged request must be refused before it is
counted); the SKENE settings must be valid."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

AFTER = {
    "skene_pg.W001": (
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "request.user is not set yet when it gates, so every request looks anonymous",
    ),
    "skene_pg.W002": (
        "django.middleware.csrf.CsrfViewMiddleware",
        "requests that CSRF protection refuses would be counted before they are refused",
    ),
}


def _class(path: str) -> Any:
    try:
        return import_string(path)
    except ImportError:
        return None


def middleware_order(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from skene_pg.django.middleware import GateMiddleware

    classes = [_class(path) for path in getattr(settings, "MIDDLEWARE", None) or []]
    gate_at = next(
        (i for i, c in enumerate(classes) if isinstance(c, type) and issubclass(c, GateMiddleware)),
        None,
    )
    if gate_at is None:
        return []
    found = []
    for check_id, (path, why) in AFTER.items():
        required = _class(path)
        for i, c in enumerate(classes):
            if (
                isinstance(c, type)
                and required is not None
                and issubclass(c, required)
                and i > gate_at
            ):
                found.append(
                    checks.Warning(
                        f"skene_pg.django.GateMiddleware is placed before {path.rsplit('.', 1)[1]}",
                        hint=f"Move it after {path} in MIDDLEWARE: otherwise {why}.",
                        obj="settings.MIDDLEWARE",
                        id=check_id,
                    )
                )
                break
    return found


def valid_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from skene_pg.django import conf

    try:
        conf._read()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), obj="settings.SKENE", id="skene_pg.E001")]
    return []


def register() -> None:
    checks.register(middleware_order, checks.Tags.compatibility)
    checks.register(valid_settings, checks.Tags.compatibility)
