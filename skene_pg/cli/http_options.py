"""The webhook server's options of `skene-pg listen --http`: its limits (docs/billing.md,
"Webhook server limits") and its own database URL. `http_options` turns them into
one `http_limits` argument (an HttpLimits) and `http_database_url`."""

from __future__ import annotations

import functools
import re
from typing import Any

import click

from skene_pg.http_server import HttpLimits

DEFAULTS = HttpLimits()
_SIZE = re.compile(r"^\s*(\d+)\s*([kKmM]i?[bB]?|[bB])?\s*$")


class ByteSize(click.ParamType):
    """Bytes: 1048576, 512K, 1M (K and M are 1024 and 1024²)."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.match(str(value))
        if not match:
            self.fail(f"{value!r} is not a size (e.g. 1048576, 512K, 1M)", param, ctx)
        number, unit = int(match.group(1)), (match.group(2) or "b")[0].lower()
        size = number * {"b": 1, "k": 1024, "m": 1024 * 1024}[unit]
        if size < 1024:
            self.fail(f"{value!r} is too small (1K at least)", param, ctx)
        return size


def _seconds(name: str, env: str, default: float, what: str) -> Any:
    return click.option(
        name,
        type=click.FloatRange(min=0.1),
        default=default,
        show_default=True,
        envvar=env,
        show_envvar=True,
        metavar="SECONDS",
        help=what,
    )


_OPTIONS = [
    click.option(
        "--http-database-url",
        envvar="SKENE_HTTP_DATABASE_URL",
        show_envvar=True,
        metavar="URL",
        help="The webhook server's own database URL, e.g. as a role with only what it "
        "needs [default: --database-url].",
    ),
    click.option(
        "--http-max-body",
        type=ByteSize(),
        default="1M",
        show_default=True,
        envvar="SKENE_HTTP_MAX_BODY",
        show_envvar=True,
        metavar="BYTES",
        help="Largest webhook body; larger is a 413 before it is read (512K, 1M, ...).",
    ),
    _seconds(
        "--http-header-timeout",
        "SKENE_HTTP_HEADER_TIMEOUT",
        DEFAULTS.header_timeout,
        "A request's line and headers must arrive within this, or the connection is closed.",
    ),
    _seconds(
        "--http-body-timeout",
        "SKENE_HTTP_BODY_TIMEOUT",
        DEFAULTS.body_timeout,
        "A request's body must arrive within this after its headers, or it is a 408.",
    ),
    click.option(
        "--http-max-connections",
        type=click.IntRange(8, 100_000),
        default=DEFAULTS.max_connections,
        show_default=True,
        envvar="SKENE_HTTP_MAX_CONNECTIONS",
        show_envvar=True,
        help="Open connections at most; past it the one idle the longest is closed, "
        "or the new one refused (503).",
    ),
    click.option(
        "--http-pool-size",
        type=click.IntRange(1, 64),
        default=DEFAULTS.pool_size,
        show_default=True,
        envvar="SKENE_HTTP_POOL_SIZE",
        show_envvar=True,
        help="Database sessions of the webhook server, at most.",
    ),
    _seconds(
        "--http-pool-timeout",
        "SKENE_HTTP_POOL_TIMEOUT",
        DEFAULTS.pool_timeout,
        "Wait this long for a database session, then answer 503 with Retry-After.",
    ),
]

_NAMES = (
    "http_max_body",
    "http_header_timeout",
    "http_body_timeout",
    "http_max_connections",
    "http_pool_size",
    "http_pool_timeout",
)


def http_options(fn: Any) -> Any:
    """The options above; the command gets `http_limits` and `http_database_url`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _NAMES}
        kwargs["http_limits"] = HttpLimits(
            max_body=values["http_max_body"],
            header_timeout=values["http_header_timeout"],
            body_timeout=values["http_body_timeout"],
            max_connections=values["http_max_connections"],
            pool_size=values["http_pool_size"],
            pool_timeout=values["http_pool_timeout"],
        )
        return fn(*args, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
