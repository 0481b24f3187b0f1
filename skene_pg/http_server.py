"""The HTTP side of `skene-pg listen --http`: uvicorn serving a Starlette app in a
thread beside the worker, and what every endpoint shares (database access, 400s).
Endpoints live with their feature (billing/webhook.py, email/webhook.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.responses import JSONResponse

from skene_pg import db


@dataclass(frozen=True)
class Database:
    """How an endpoint reaches the database: one short connection per delivery
    (webhooks are rare next to the gate)."""

    url: str

    def run(self, work: Callable[[psycopg.Connection], Any]) -> Any:
        with db.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            return work(conn)


def bad_request(reason: str) -> JSONResponse:
    """A refused delivery: nothing was stored."""
    return JSONResponse({"error": reason}, status_code=400)


class HttpServer:
    """uvicorn serving the app in a daemon thread; `stop()` finishes open requests."""

    def __init__(self, app: Starlette, host: str, port: int):
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, name="skene-http", daemon=True)

    def start(self, timeout: float = 10.0) -> HttpServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the webhook server did not start (is the port free?)")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", [])
        return int(servers[0].sockets[0].getsockname()[1]) if servers else 0

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--http wants HOST:PORT, e.g. 127.0.0.1:8787, got {value!r}")
    return host or "127.0.0.1", int(port)
