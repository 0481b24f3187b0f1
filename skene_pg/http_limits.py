"""The limits of the webhook server and what enforces them: `HttpLimits` (what one
client, or many, may take), `BodyGuard` (the ASGI middleware that reads each body
within its size and time) and `GuardedH11Protocol` (uvicorn's h11 protocol with
deadlines on every phase of a connection and a cap on connections). What a stranger
on the network can't do to the server (docs/billing.md, "Webhook server limits"):

- send a big body: `BodyGuard` answers 413 as soon as Content-Length says so, or as
  soon as a streamed (chunked) body passes the limit, and never holds more than the
  limit of one body (and no more than `max_buffered` over all bodies at once);
- hold connections open: `GuardedH11Protocol` gives the request line and headers
  `header_timeout` (from the connection, or from the previous answer), `BodyGuard`
  gives the body `body_timeout`, and past `max_connections` the connection idle the
  longest (waiting for headers, trickling a body, or lingering after an answer) is
  closed to make room, or the new one is refused."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import anyio
import h11
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("skene_pg.http")

RETRY_AFTER = 1  # seconds, on every 503


@dataclass(frozen=True)
class HttpLimits:
    """What one client, or many, may take from the server. The CLI's defaults."""

    max_body: int = 1024 * 1024  # bytes
    header_timeout: float = 10.0  # seconds for the request line and headers
    body_timeout: float = 10.0  # seconds for the whole body, from the end of the headers
    max_connections: int = 512
    pool_size: int = 4  # database sessions, at most
    pool_timeout: float = 2.0  # seconds to wait for one, then 503
    keep_alive: float = 5.0  # an idle keep-alive connection is closed after this
    linger: float = 2.0  # after an early answer (413), the rest of the body may arrive

    @property
    def max_buffered(self) -> int:
        """Bytes of request bodies held at once, over all connections (then 503)."""
        return 32 * self.max_body


# -- the body --------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class _OverBudget(Exception):
    pass


class BodyGuard:
    """ASGI middleware: the whole body, within `max_body` and `body_timeout`, before
    the endpoint runs; the endpoint then reads it from memory.

    413 when Content-Length is over the limit (without reading a byte of the body,
    and without `100 Continue`), or as soon as a streamed body passes it; 408 when
    the body is not in within `body_timeout`; 503 when the bodies being read would
    hold more than `max_buffered` bytes together."""

    def __init__(self, app: ASGIApp, limits: HttpLimits):
        self.app = app
        self.limits = limits
        self.buffered = 0  # all requests run on one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _answer(send, 413, f"the body is {declared} bytes; the limit is {limit}")
            return
        held = 0
        try:
            try:
                with anyio.fail_after(self.limits.body_timeout):
                    body, held = await self._read(receive)
            except TimeoutError:
                timeout = f"{self.limits.body_timeout:g}"
                await _answer(send, 408, f"the body did not arrive within {timeout} s", close=True)
                return
            except _TooLarge:
                await _answer(send, 413, f"the body is larger than the limit of {limit} bytes")
                return
            except _OverBudget:
                await _answer(send, 503, "too many bodies being received at once; retry")
                return
            except _Disconnected:
                return
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.buffered -= held

    async def _read(self, receive: Receive) -> tuple[bytes, int]:
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.limits.max_body:
                    raise _TooLarge
                if self.buffered + len(chunk) > self.limits.max_buffered:
                    raise _OverBudget
                self.buffered += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks), size
        except BaseException:
            self.buffered -= sum(len(c) for c in chunks)
            raise


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value)  # h11 refused anything but digits
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # a disconnect, when the client goes

    return replay


async def _answer(send: Send, status: int, reason: str, close: bool = False) -> None:
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else {}
    if close:
        headers["Connection"] = "close"
    response = JSONResponse({"error": reason}, status_code=status, headers=headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # JSONResponse never reads
    return {"type": "http.disconnect"}


# -- connections -----------------------------------------------------------------------


def _raw_response(status: str, reason: str, *headers: str) -> bytes:
    """An answer written straight to the socket, where h11 can't send one (no
    request yet), and closed after."""
    body = json.dumps({"error": reason}).encode()
    head = [
        f"HTTP/1.1 {status}",
        "content-type: application/json",
        "connection: close",
        f"content-length: {len(body)}",
        *headers,
    ]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


_REFUSED = _raw_response(
    "503 Service Unavailable", "too many connections; retry", f"retry-after: {RETRY_AFTER}"
)
_TIMED_OUT = _raw_response("408 Request Timeout", "the headers did not arrive in time")


class _Refusals:
    """Refused connections, logged at most every 10 s (a flood must not flood the log)."""

    def __init__(self) -> None:
        self.count = 0
        self.logged_at = -math.inf

    def note(self, connections: int) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.logged_at >= 10:
            log.warning(
                "webhook server: %d busy connections; refused %d new one(s)",
                connections,
                self.count,
            )
            self.count, self.logged_at = 0, now


_refusals = _Refusals()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines and a connection cap.

    uvicorn's own `timeout_keep_alive` only runs between requests and stops at the
    first byte, and `limit_concurrency` answers 503 only once a whole request is in,
    so a client sending headers a byte at a time, or never, would hold its socket for
    ever. Here every connection is in one phase: `headers` (waiting for the request
    line and headers: `header_timeout`, from the connection or the previous answer),
    `body` (the endpoint's BodyGuard has `body_timeout`; this closes it a second
    later as a backstop), `busy` (the endpoint is answering) or `linger` (answered
    early, e.g. 413, while the rest of the body arrives and is thrown away:
    `linger`). Past `max_connections`, the connection longest in `headers`, `body`
    or `linger` is closed to make room; with none, the new one gets a 503."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: HttpLimits = getattr(config, "skene_limits", HttpLimits())
        self.phase: str | None = None
        self.phase_since = 0.0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # closed ones stay in the set until their connection_lost runs
            others = [c for c in self.connections if c is not self and not c.transport.is_closing()]
            if len(others) >= self.limits.max_connections and not self._make_room(others):
                _refusals.note(len(others))
                transport.write(_REFUSED)
                transport.close()
                return
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self.phase = None
        super().connection_lost(exc)

    def _current(self) -> str | None:
        if self.transport is None or self.transport.is_closing():
            return None
        theirs, ours = self.conn.their_state, self.conn.our_state
        if theirs is h11.IDLE:
            return "headers"
        if theirs is h11.SEND_BODY:
            return "linger" if ours in (h11.DONE, h11.MUST_CLOSE) else "body"
        return "busy"

    def _follow(self) -> None:
        phase = self._current()
        if phase == self.phase:
            return
        self._cancel()
        self.phase = phase
        self.phase_since = self.loop.time()
        timeout = {
            "headers": self.limits.header_timeout,
            "body": self.limits.body_timeout + 1.0,
            "linger": self.limits.linger,
        }.get(phase or "")
        if phase is not None and timeout is not None:
            self._deadline = self.loop.call_later(timeout, self._expire, phase)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, phase: str) -> None:
        self._deadline = None
        if self.phase != phase or self.transport.is_closing():
            return
        if phase == "headers" and self.conn.trailing_data[0]:  # part of a request came
            self.transport.write(_TIMED_OUT)
        self.transport.close()

    def _make_room(self, others: list[Any]) -> bool:
        idle = [
            c
            for c in others
            if isinstance(c, GuardedH11Protocol) and c.phase in ("headers", "body", "linger")
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.phase_since)
        oldest._cancel()
        oldest.phase = None
        oldest.transport.close()
        return True
