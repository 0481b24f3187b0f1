"""Helpers for the webhook server tests: signed requests, raw sockets for slow and
oversized clients, and the server process as /proc shows it. Everything talks to
127.0.0.1 only."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from svix.webhooks import Webhook as SvixWebhook

from tests.billing.conftest import (
    RESEND_SECRET,
    stripe_event,
    stripe_signature,
    subscription_object,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event(n: int | str) -> dict[str, Any]:
    """A signed-able Stripe event of its own id, linking a customer of its own."""
    return stripe_event(
        f"evt_{n}",
        "customer.subscription.updated",
        subscription_object(f"cus_{n}", f"sub_{n}", "active", skene_customer=f"acct_{n}"),
    )


def stripe_request(body: bytes, at: int | None = None) -> dict[str, Any]:
    """httpx keyword arguments of a signed POST /webhooks/stripe."""
    return {
        "content": body,
        "headers": {
            "Stripe-Signature": stripe_signature(body, at=at),
            "Content-Type": "application/json",
        },
    }


def resend_request(body: bytes, at: float | None = None) -> dict[str, Any]:
    """httpx keyword arguments of a Svix-signed POST /webhooks/resend."""
    when = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    msg_id = f"msg_{time.monotonic_ns()}"
    return {
        "content": body,
        "headers": {
            "svix-id": msg_id,
            "svix-timestamp": str(int(when.timestamp())),
            "svix-signature": SvixWebhook(RESEND_SECRET).sign(msg_id, when, body.decode()),
            "Content-Type": "application/json",
        },
    }


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- raw sockets -----------------------------------------------------------------------


def raw_connect(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if first:
        sock.sendall(first)
    return sock


PARTIAL_HEADERS = b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: app"
PARTIAL_BODY = (
    b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"
    b'Content-Type: application/json\r\n\r\n{"id": "evt_slow", '
)


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True
    finally:
        sock.setblocking(True)


def read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and everything the server sent until it stopped (or closed)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    while length and len(rest) < int(length.group(1)) and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, head + b"\r\n\r\n" + rest


@contextmanager
def many(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


# -- /proc -----------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def rss(pid: int) -> int:
    """Resident memory of a process in bytes (VmRSS)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1)) * 1024


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
