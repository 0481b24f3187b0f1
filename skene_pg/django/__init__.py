"""Django: usage limits in a few lines.

    INSTALLED_APPS += ["skene_pg.django"]
    MIDDLEWARE += ["skene_pg.django.GateMiddleware"]      # after auth and CSRF
    SKENE = {"CUSTOMER": "myapp.billing.customer_of"}    # request -> customer id or None

Requests matching a feature's `match` patterns are counted; a blocked one gets a 402
problem. `@gate("feature")` gates one view (DRF views too). `manage.py migrate`
installs and upgrades the skene schema; `skene_apply`, `skene_listen` and
`skene_backfill` are management commands. Settings: skene_pg.django.conf.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GateMiddleware", "client", "gate"]


def __getattr__(name: str) -> Any:
    # Lazy: Django imports this package (INSTALLED_APPS) before its settings and apps
    # are ready; the middleware and decorator import django.http and friends.
    if name == "GateMiddleware":
        from skene_pg.django.middleware import GateMiddleware

        return GateMiddleware
    if name == "gate":
        from skene_pg.django.decorators import gate

        return gate
    if name == "client":
        from skene_pg.django.conf import client

        return client
    raise AttributeError(name)
