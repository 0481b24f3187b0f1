"""The webhook server in a process of its own, the way `skene-pg listen --http` runs
it: this process binds the socket (a port in use is one clear error, at start) and
supervises the child, `python -m skene_pg.webhooks`, which serves the socket with
the limits of `http_limits`. The child has its own memory, interpreter lock, threads and
database pool, so a flood of webhooks can't slow or stop the email beside it."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp

from skene_pg.http_server import BACKLOG, HttpLimits, guarded_server

log = logging.getLogger("skene_pg.http")


# -- the socket ------------------------------------------------------------------------


class BindError(RuntimeError):
    """The address can't be served; the message says why and what to do."""


def bind(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A listening socket, bound here so that a port in use is one clear error (and
    so that a restarted server process takes over the same socket)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise BindError(f"unknown host {host!r} ({exc.strerror})") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = (
                f"port {port} is already in use on {host}: stop what listens there, "
                "or choose another port"
            )
        elif exc.errno == errno.EACCES:
            reason = f"no permission to listen on port {port} (below 1024): choose 1024 or above"
        elif exc.errno == errno.EADDRNOTAVAIL:
            reason = f"{host} is not an address of this machine: try 0.0.0.0 or 127.0.0.1"
        else:
            reason = f"cannot listen on {host}:{port}: {exc.strerror}"
        raise BindError(reason) from exc
    return sock


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--http wants HOST:PORT, e.g. 127.0.0.1:8787, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


# -- in its own process (skene-pg listen --http) ---------------------------------------


class WebhookProcess:
    """The webhook server as a child process of `skene-pg listen`, so that a flood of
    webhooks takes neither memory, nor the interpreter, nor the life of the process
    that sends the email. This process binds the socket (a port in use is its error,
    at start) and hands it down; the child gets its settings as one JSON line on
    stdin and keeps reading stdin, so it ends when this process ends however it ends.
    A child that dies is started again (1 s, doubling to 30 s) on the same socket."""

    def __init__(self, module: str, settings: dict[str, Any], sock: socket.socket):
        self.module = module
        self.settings = settings
        self.sock = sock
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="skene-http", daemon=True)

    def start(self) -> WebhookProcess:
        with self._lock:
            self._spawn()
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _spawn(self) -> None:
        """A new child (with the lock held: `stop` then sees it, or none is started)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            pass_fds=(self.sock.fileno(),),
            start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop it
        )
        assert proc.stdin is not None
        try:
            line = json.dumps({**self.settings, "fd": self.sock.fileno()}).encode() + b"\n"
            proc.stdin.write(line)
            proc.stdin.flush()
        except BrokenPipeError:  # it died at once: the supervisor sees it exit
            pass
        self.proc = proc

    def _supervise(self) -> None:
        backoff = 1.0
        while True:
            with self._lock:
                proc = self.proc
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            if proc.stdin is not None:
                proc.stdin.close()
            if time.monotonic() - started > 60:
                backoff = 1.0
            log.error(
                "the webhook server exited (code %s); starting it again in %g s", code, backoff
            )
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: the child finishes the requests it has, then exits."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()
        self.sock.close()


def _raise_fd_limit(needed: int) -> None:
    """Open files for `needed` sockets, if the hard limit allows (the soft one is
    often 1024): a full accept queue on a full server must not hit EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "webhook server: the open-file limit (%d) is below the %d that %d connections "
            "can take at a peak; lower --http-max-connections or raise `ulimit -n`",
            target,
            needed,
            needed - BACKLOG - 64,
        )


def run_child(make_app: Callable[[dict[str, Any], HttpLimits], ASGIApp]) -> None:
    """The child's side of WebhookProcess: read the settings line, serve the inherited
    socket in the main thread (uvicorn's SIGTERM handling), and leave when stdin ends
    (the parent is gone)."""
    settings = json.loads(sys.stdin.buffer.readline())
    limits = HttpLimits(**settings["limits"])
    sock = socket.socket(fileno=int(settings["fd"]))
    server = guarded_server(make_app(settings, limits), limits)  # sets up logging
    _raise_fd_limit(limits.max_connections + BACKLOG + 64)

    def parent_gone() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed it, or died
        server.should_exit = True
        time.sleep(15)  # past uvicorn's graceful shutdown
        os._exit(1)

    threading.Thread(target=parent_gone, name="parent-watch", daemon=True).start()
    server.run([sock])
