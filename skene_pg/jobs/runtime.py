"""What the worker's threads share: its settings and counters, the reconnect backoff,
the state they coordinate through (WorkerCore), and how a dead thread is reported."""

from __future__ import annotations

import contextlib
import math
import os
import queue as queue_lib
import random
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from skene_pg import db
from skene_pg.jobs import protocol as q
from skene_pg.jobs.kinds import Handler, PeriodicTask
from skene_pg.jobs.retry import RetryPolicy
from skene_pg.logs import scrub

CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


@dataclass
class WorkerSettings:
    concurrency: int = 8  # sends at once
    poll_interval: float = 5.0  # seconds between polls (and reaps) without notifications
    lease: float = 30.0  # seconds; extended every lease/3 while a job runs
    drain: bool = False  # run every due job, then return
    retry_base: float = 5.0  # first retry after ~base seconds, doubling, with jitter
    retry_cap: float = 3600.0  # longest wait between retries
    max_lost: int = 3  # lost leases before a job is dead (it kills its worker)
    reconnect_max: float = 30.0  # longest wait between reconnection attempts
    name: str | None = None  # shown in skene.jobs.locked_by; default host:pid


@dataclass
class Stats:
    claimed: int = 0
    succeeded: int = 0
    skipped: int = 0
    dead: int = 0
    retryable: int = 0
    deferred: int = 0
    stale: int = 0  # finishes ignored because the lease had been lost
    reaped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


class Backoff:
    """Exponential backoff with full jitter for reconnects."""

    def __init__(self, first: float = 0.1, cap: float = 30.0):
        self.first, self.cap, self.n = first, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2**self.n)
        self.n += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.n = 0


STOP = object()


class WorkerCrashed(RuntimeError):
    """A thread of the worker died of an error it does not handle, so the worker
    stopped. `thread` names it (skene-bookkeeper, skene-listener, skene-send_N, main)."""

    def __init__(self, thread: str, error: BaseException):
        super().__init__(f"the worker's {thread} thread died: {one_line(error)}")
        self.thread = thread
        self.error = error


def one_line(error: BaseException) -> str:
    """`Class: message` on one line (a database error's primary message, without the
    query position and hint psycopg appends)."""
    message = str(error).strip()
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        message = error.diag.message_primary
    first = message.splitlines()[0] if message else ""
    return f"{type(error).__name__}: {scrub(first)}"


class WorkerCore:
    """The state every thread of the worker shares, and its connections."""

    def __init__(
        self,
        database_url: str,
        handlers: Sequence[Handler],
        settings: WorkerSettings | None = None,
        periodic: Sequence[PeriodicTask] = (),
        listen_url: str | None = None,
    ):
        self.url = database_url
        self.listen_url = listen_url  # a direct connection for LISTEN; None: database_url
        self.settings = settings or WorkerSettings()
        if self.settings.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.settings.lease <= 0 or self.settings.poll_interval <= 0:
            raise ValueError("lease and poll interval must be positive")
        self.handlers = {h.kind: h for h in handlers}
        self.periodic = list(periodic)
        self.retry_policy = RetryPolicy(
            "exponential", self.settings.retry_base, self.settings.retry_cap
        )
        self._periodic_next: dict[str, float] = {}  # task name -> monotonic time
        self.name = self.settings.name or f"{socket.gethostname()}:{os.getpid()}"
        self.stats = Stats()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._more = True  # there may be due jobs we have not claimed
        self._signals = 0  # bumped by every notification (see _claim_and_dispatch)
        self._backlog = False  # the last claim was full: more jobs are waiting
        self._sending = 0  # jobs handed to senders and not back yet
        self._leased: dict[int, q.Job] = {}  # claimed, finish not yet recorded
        self._next_due = math.inf  # monotonic time of the earliest retry we scheduled
        self._finishes: queue_lib.Queue[Any] = queue_lib.Queue()
        self.listening = threading.Event()  # set while the LISTEN connection is up
        self.polling_only = threading.Event()  # set when LISTEN was given up for a pooler
        self._crash: tuple[str, BaseException] | None = None  # the first thread that died

    # -- public ------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop claiming; running jobs finish, then run() returns. Safe from signal
        handlers and other threads."""
        self._stopping.set()
        self._wake.set()

    # -- connections ---------------------------------------------------------------
    def _connect(self, purpose: str, url: str | None = None) -> psycopg.Connection:
        """Autocommit: every statement is its own transaction, so any server process
        of a pooler may run it. The name shown in pg_stat_activity goes in the startup
        packet (a pooler restores it for each transaction it hands us), not in a SET
        that would stay behind on a shared server process."""
        return db.connect(
            url or self.url,
            autocommit=True,
            application_name=f"skene-pg {purpose}",
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )

    @staticmethod
    def _close(conn: psycopg.Connection | None) -> None:
        if conn is not None:
            # a broken connection may fail to close: it is gone anyway
            with contextlib.suppress(Exception):
                conn.close()
