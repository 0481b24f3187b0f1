"""The HTTP side of `skene-pg listen --http`: what every endpoint shares (the limits,
database access, JSON bodies, timestamps, 400s and 503s) and the server they run in,
uvicorn serving a Starlette app (`guarded_server`; `HttpServer` runs it in a thread
for the demo). Endpoints live with their feature (billing/webhook.py,
email/webhook.py); `webhooks.py` puts them together; `http_process.py` runs them in a
process of their own. The limits and what enforces them are in `http_limits`, the
database pool in `http_database`; the names endpoints use from both are importable
from here."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from skene_pg.http_database import Busy, Database
from skene_pg.http_limits import RETRY_AFTER, BodyGuard, GuardedH11Protocol, HttpLimits

__all__ = [
    "BACKLOG",
    "BadBody",
    "BodyGuard",
    "Busy",
    "Database",
    "HttpLimits",
    "HttpServer",
    "bad_request",
    "guarded_server",
    "parse_json",
    "timestamp_problem",
    "unavailable",
]

MAX_HEADER_BYTES = 16 * 1024  # request line and headers; larger is a 400 from h11
MAX_JSON_DEPTH = 64
# Connections the kernel queues before they are accepted; also how many the event loop
# accepts in one turn, before the connection cap closes the excess.
BACKLOG = 1024


# -- answers ---------------------------------------------------------------------------


def bad_request(reason: str) -> JSONResponse:
    """A refused delivery: nothing was stored."""
    return JSONResponse({"error": reason}, status_code=400)


def unavailable(reason: str) -> JSONResponse:
    """Not now (busy, or the database is away): nothing was stored, send it again."""
    return JSONResponse(
        {"error": reason}, status_code=503, headers={"Retry-After": str(RETRY_AFTER)}
    )


class BadBody(ValueError):
    """A body that is not JSON PostgreSQL can store; the message names the problem."""


def parse_json(body: bytes) -> Any:
    """The body as JSON that jsonb can hold: UTF-8, no NUL (raw or \\u0000), no
    unpaired surrogate, no NaN or Infinity, at most MAX_JSON_DEPTH levels."""
    nul = body.find(b"\x00")
    if nul >= 0:
        raise BadBody(f"the body contains a NUL byte (at byte {nul})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBody(f"the body is not UTF-8 (byte {exc.start})") from exc
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError as exc:
        raise BadBody(f"the body is nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except ValueError as exc:
        raise BadBody(f"the body is not JSON: {exc}") from exc
    _check_storable(value)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _check_storable(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise BadBody(f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_string(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_string(text: str) -> None:
    if text.isascii():
        if "\x00" in text:
            raise BadBody("the body contains \\u0000 (NUL), which PostgreSQL cannot store")
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadBody(
            f"the body contains an unpaired surrogate (\\u{ord(text[exc.start]):04x})"
        ) from exc


def timestamp_problem(at: float, tolerance: float, now: float | None = None) -> str | None:
    """Why a signed timestamp is refused (too old or too far ahead), or None."""
    now = time.time() if now is None else now
    if abs(now - at) <= tolerance:
        return None
    when = f"{int(at - now)} s in the future" if at > now else f"{int(now - at)} s old"
    return f"the timestamp is {when}; the tolerance is {int(tolerance)} s either way"


# -- the server ------------------------------------------------------------------------


class _Config(uvicorn.Config):
    def __init__(self, app: ASGIApp, limits: HttpLimits):
        super().__init__(
            app,
            http=GuardedH11Protocol,
            ws="none",
            lifespan="on",
            log_level="error",  # not a line per malformed request from a stranger
            access_log=False,
            server_header=False,
            timeout_keep_alive=max(1, math.ceil(limits.keep_alive)),
            # a backstop: the protocol caps connections itself, at accept time
            limit_concurrency=limits.max_connections + 1,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            timeout_graceful_shutdown=10,
            backlog=BACKLOG,
        )
        self.skene_limits = limits


def guarded_server(app: ASGIApp, limits: HttpLimits) -> uvicorn.Server:
    """uvicorn with the limits, for an app already wrapped in BodyGuard."""
    return uvicorn.Server(_Config(app, limits))


# -- in a thread (the demo) ------------------------------------------------------------


class HttpServer:
    """The server in a daemon thread of this process (the demo); `stop()` finishes
    open requests. `skene-pg listen --http` runs it in its own process instead."""

    def __init__(self, app: ASGIApp, sock: socket.socket, limits: HttpLimits | None = None):
        self.sock = sock
        self.server = guarded_server(app, limits or HttpLimits())
        self.thread = threading.Thread(
            target=self.server.run, args=([sock],), name="skene-http", daemon=True
        )

    def start(self, timeout: float = 10.0) -> HttpServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the webhook server did not start")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
