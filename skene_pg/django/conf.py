"""`settings.SKENE`, read once, and the client and gate cache made from it.

    SKENE = {
        "CUSTOMER": "myapp.billing.customer_of",  # request -> customer id or None
                                                  # default: the signed-in user's id
        "CUSTOMER_OF_USER": "myapp.billing.customer_of_user",  # user -> customer id
        "DATABASE": "default",    # a DATABASES alias or a postgresql:// URL
        "ANONYMOUS": "pass",      # no customer: "pass" ungated, or "401"
        "ON_ERROR": "503",        # database failed: "503", or "open" (let it through)
        "REFUND_ON_ERROR": False, # give the count back when the view raises or answers 5xx
        "GATES_TTL": 10,          # seconds skene.gates() is cached
        "POOL": {"min_size": 1, "max_size": 10, "timeout": 5},
        "SYNC_USERS": True,       # identify() on every save of the user model
        "USER_FIELDS": {"email": "email", "name": "get_full_name", "timezone": None},
        "CONFIG": "skene.toml",   # skene_apply's default file
    }

The gate connects with its own pool (never Django's connection), so its counts and
prompts commit whatever the view's transaction does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from psycopg import pq
from psycopg.conninfo import make_conninfo

from skene_pg import db
from skene_pg.client import Skene
from skene_pg.gates import GateCache
from skene_pg.gating import Policy

KNOWN = {
    "CUSTOMER",
    "CUSTOMER_OF_USER",
    "DATABASE",
    "ANONYMOUS",
    "ON_ERROR",
    "REFUND_ON_ERROR",
    "GATES_TTL",
    "POOL",
    "SYNC_USERS",
    "USER_FIELDS",
    "CONFIG",
}
DEFAULT_USER_FIELDS = {"email": "email", "name": "get_full_name", "timezone": None}


def user_customer(user: Any) -> str:
    """The default customer of a user: its primary key."""
    return str(user.pk)


@dataclass(frozen=True)
class SkeneSettings:
    customer: Callable[[Any], str | None]
    customer_of_user: Callable[[Any], str]
    database: str  # libpq connection string
    policy: Policy
    gates_ttl: float
    pool: dict[str, Any]
    sync_users: bool
    user_fields: dict[str, str | None]
    config: str
    alias: str | None = field(default=None)  # the DATABASES alias, when one was named


def _callable(value: Any, key: str) -> Callable[..., Any]:
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(f"SKENE[{key!r}]: cannot import {value!r}: {exc}") from exc
    if not callable(value):
        raise ImproperlyConfigured(f"SKENE[{key!r}] must be a callable or its dotted path")
    return value


def database_conninfo(alias: str) -> str:
    """A libpq connection string for one of settings.DATABASES."""
    try:
        entry = django_settings.DATABASES[alias]
    except KeyError:
        raise ImproperlyConfigured(
            f"SKENE['DATABASE']: no database {alias!r} in DATABASES"
        ) from None
    if "postgresql" not in entry.get("ENGINE", ""):
        raise ImproperlyConfigured(f"SKENE['DATABASE']: {alias!r} is not a PostgreSQL database")
    libpq = {d.keyword.decode() for d in pq.Conninfo.get_defaults()}
    params: dict[str, Any] = {
        key: value for key, value in (entry.get("OPTIONS") or {}).items() if key in libpq
    }
    for key, name in (
        ("NAME", "dbname"),
        ("USER", "user"),
        ("PASSWORD", "password"),
        ("HOST", "host"),
        ("PORT", "port"),
    ):
        if entry.get(key):
            params[name] = entry[key]
    return make_conninfo(**params)


def _read() -> SkeneSettings:
    raw = dict(getattr(django_settings, "SKENE", {}) or {})
    unknown = set(raw) - KNOWN
    if unknown:
        raise ImproperlyConfigured(
            f"SKENE: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN))}"
        )
    of_user = _callable(raw.get("CUSTOMER_OF_USER", user_customer), "CUSTOMER_OF_USER")

    def signed_in(request: Any) -> str | None:
        user = getattr(request, "user", None)
        return of_user(user) if user is not None and user.is_authenticated else None

    customer = _callable(raw["CUSTOMER"], "CUSTOMER") if "CUSTOMER" in raw else signed_in
    database = str(raw.get("DATABASE", "default"))
    is_url = "://" in database or "=" in database
    try:
        policy = Policy(
            anonymous=str(raw.get("ANONYMOUS", "pass")),
            on_error=str(raw.get("ON_ERROR", "503")),
            refund_on_error=bool(raw.get("REFUND_ON_ERROR", False)),
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"SKENE: {exc}") from exc
    return SkeneSettings(
        customer=customer,
        customer_of_user=of_user,
        database=database if is_url else database_conninfo(database),
        policy=policy,
        gates_ttl=float(raw.get("GATES_TTL", 10)),
        pool=dict(raw.get("POOL", {})),
        sync_users=bool(raw.get("SYNC_USERS", True)),
        user_fields={**DEFAULT_USER_FIELDS, **raw.get("USER_FIELDS", {})},
        config=str(raw.get("CONFIG", "skene.toml")),
        alias=None if is_url else database,
    )


class _State:
    """Built on first use, dropped by reset() (settings changed, tests)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: SkeneSettings | None = None
        self.client: Skene | None = None
        self.cache: GateCache | None = None


_state = _State()


def settings() -> SkeneSettings:
    if _state.settings is None:
        with _state.lock:
            if _state.settings is None:
                _state.settings = _read()
    return _state.settings


def client() -> Skene:
    """The process's Skene client for the configured database (opened on first call)."""
    if _state.client is None:
        current = settings()
        with _state.lock:
            if _state.client is None:
                pool = {
                    "min_size": db.POOL_MIN_SIZE,
                    "max_size": db.POOL_MAX_SIZE,
                    "timeout": db.POOL_TIMEOUT,
                    **current.pool,
                }
                _state.client = Skene(current.database, **pool)
    return _state.client


def gate_cache() -> GateCache:
    if _state.cache is None:
        ttl = settings().gates_ttl
        with _state.lock:
            if _state.cache is None:
                _state.cache = GateCache(ttl)
    return _state.cache


def reset() -> None:
    """Forget the settings, close the client's pool, drop the cached gates."""
    with _state.lock:
        old = _state.client
        _state.settings = _state.client = _state.cache = None
    if old is not None:
        old.close()
