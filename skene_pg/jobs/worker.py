"""`skene-pg listen`: claim → dispatch → finish.

Threads, each with one job:
- the main thread claims due jobs (skene.claim_jobs) when a notification, the poll
  interval or a freed slot says there may be work, reaps expired leases on every poll,
  and hands the jobs to the senders;
- N sender threads run a job's handler (render and send an email): no database;
- the bookkeeper records how each attempt ended (skene.finish_job, many per statement)
  and extends the leases of running jobs every lease/3;
- the listener holds the one LISTEN connection (TCP keepalives, reconnect with backoff)
  and only wakes the main thread: the table is the truth, a missed NOTIFY only adds
  the poll interval's latency. It LISTENs on `listen_url` when given (a direct
  connection, while everything else goes through a pooler); otherwise on the
  database URL, unless that turns out to be a pooler (db.through_pooler), where
  LISTEN hears nothing: then it says so once and the worker only polls.

A thread that dies of an error it does not handle (anything but a lost connection)
stops the whole worker, which then raises WorkerCrashed naming the thread: a worker
without its bookkeeper would send and never record it (every job sent again and
again, then dead), one without its listener would never hear a job. Better no
process, which a supervisor restarts and an operator sees, than a half-alive one.

A SIGKILLed worker's jobs come back when their lease expires (the reaper runs on every
poll of every worker); the job's idempotency key makes the re-send a no-op at the
provider. SIGTERM stops claiming and lets running jobs finish.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue as queue_lib
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg

from skene_pg import db
from skene_pg.jobs import protocol as q
from skene_pg.jobs.kinds import Handler, Outcome, PeriodicTask
from skene_pg.jobs.retry import RetryPolicy
from skene_pg.logs import scrub

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


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


class _Backoff:
    """Exponential backoff with full jitter for reconnects."""

    def __init__(self, first: float = 0.1, cap: float = 30.0):
        self.first, self.cap, self.n = first, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2**self.n)
        self.n += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.n = 0


_STOP = object()


class WorkerCrashed(RuntimeError):
    """A thread of the worker died of an error it does not handle, so the worker
    stopped. `thread` names it (skene-bookkeeper, skene-listener, skene-send_N, main)."""

    def __init__(self, thread: str, error: BaseException):
        super().__init__(f"the worker's {thread} thread died: {_one_line(error)}")
        self.thread = thread
        self.error = error


def _one_line(error: BaseException) -> str:
    """`Class: message` on one line (a database error's primary message, without the
    query position and hint psycopg appends)."""
    message = str(error).strip()
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        message = error.diag.message_primary
    first = message.splitlines()[0] if message else ""
    return f"{type(error).__name__}: {scrub(first)}"


class Worker:
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

    def run(self) -> Stats:
        s = self.settings
        log.info(
            "worker %s starting: %s, concurrency %d, lease %.0fs, poll every %.1fs",
            self.name,
            "draining" if s.drain else "listening",
            s.concurrency,
            s.lease,
            s.poll_interval,
        )
        bookkeeper = threading.Thread(
            target=self._guarded, args=(self._bookkeeper,), name="skene-bookkeeper", daemon=True
        )
        bookkeeper.start()
        listener = None
        if not s.drain:
            listener = threading.Thread(
                target=self._guarded, args=(self._listener,), name="skene-listener", daemon=True
            )
            listener.start()
        pool = ThreadPoolExecutor(max_workers=s.concurrency, thread_name_prefix="skene-send")
        try:
            self._main_loop(pool)
        except Exception as exc:
            self._died("main", exc)
        finally:
            self._stopping.set()
            pool.shutdown(wait=True)  # running sends finish
            self._finishes.put(_STOP)  # then their outcomes are recorded
            bookkeeper.join(timeout=s.lease + 5)
            if listener is not None:
                listener.join(timeout=5)
            for handler in self.handlers.values():
                handler.close()
            log.info("worker %s stopped: %s", self.name, self.stats.as_dict())
        if self._crash is not None:
            thread, error = self._crash
            raise WorkerCrashed(thread, error) from error
        return self.stats

    # -- threads that die ----------------------------------------------------------
    def _guarded(self, work: Callable[..., None], *args: Any) -> None:
        """A thread's work; an error it lets through stops the whole worker."""
        try:
            work(*args)
        except BaseException as exc:
            self._died(threading.current_thread().name, exc)

    def _died(self, thread: str, exc: BaseException) -> None:
        with self._lock:
            if self._crash is None:
                self._crash = (thread, exc)
        log.critical(
            "thread %s died (%s): stopping the worker; running sends finish, and a job "
            "whose outcome is not recorded runs again when its lease expires",
            thread,
            _one_line(exc),
            exc_info=exc,
        )
        self.stop()

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

    # -- main thread: poll, reap, claim, dispatch --------------------------------
    def _main_loop(self, pool: ThreadPoolExecutor) -> None:
        s = self.settings
        conn: psycopg.Connection | None = None
        backoff = _Backoff(cap=s.reconnect_max)
        next_poll = 0.0  # fetch at start
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                with self._lock:
                    if now >= self._next_due:
                        self._next_due = math.inf
                        self._more = True
                poll_due = now >= next_poll
                if poll_due or self._should_claim():
                    try:
                        if conn is None or conn.closed:
                            conn = self._connect("worker")
                        if poll_due:
                            reaped = q.reap(conn, s.max_lost)
                            if reaped:
                                self.stats.add("reaped", reaped)
                                log.warning("returned %d job(s) whose lease expired", reaped)
                            next_poll = time.monotonic() + s.poll_interval
                            self._more = True
                            self._run_periodic(conn)
                        self._claim_and_dispatch(conn, pool)
                        backoff.reset()
                    except _CONNECTION_ERRORS as exc:
                        self._close(conn)
                        conn = None
                        self._more = True
                        delay = backoff.next()
                        log.warning(
                            "database unreachable (%s): retrying in %.1fs",
                            scrub(str(exc).strip()),
                            delay,
                        )
                        self._stopping.wait(delay)
                        continue
                with self._lock:
                    idle = not self._leased
                if s.drain and not self._more and idle:
                    break
                with self._lock:
                    timeout = min(next_poll, self._next_due) - time.monotonic()
                self._wake.wait(max(0.0, timeout))
                self._wake.clear()
        finally:
            self._close(conn)

    def _run_periodic(self, conn: psycopg.Connection) -> None:
        """The periodic tasks that are due (each every `every` seconds; 0: every poll).
        A task's database error is logged and does not stop the others or the queue."""
        now = time.monotonic()
        for task in self.periodic:
            if now < self._periodic_next.get(task.name, 0.0):
                continue
            self._periodic_next[task.name] = now + task.every
            try:
                task.run(conn)
            except _CONNECTION_ERRORS:
                raise
            except psycopg.Error as exc:
                log.warning("%s: %s", task.name, scrub(str(exc).strip()))

    def _should_claim(self) -> bool:
        """With a backlog, claim in batches of half the slots (one claim and one
        context query per batch, not per job); otherwise as soon as a slot is free."""
        if not self._more:
            return False
        free = self._free_slots()
        if self._backlog:
            return free >= max(1, self.settings.concurrency // 2)
        return free > 0

    def _free_slots(self) -> int:
        with self._lock:
            return self.settings.concurrency - self._sending

    def _claim_and_dispatch(self, conn: psycopg.Connection, pool: ThreadPoolExecutor) -> None:
        free = self._free_slots()
        if free <= 0:
            return
        signals = self._signals
        jobs = q.claim(conn, self.name, free, self.settings.lease, sorted(self.handlers))
        # A notification that arrived during the claim may be for a job it did not see.
        self._backlog = len(jobs) == free
        self._more = self._backlog or self._signals != signals
        if not jobs:
            return
        self.stats.add("claimed", len(jobs))
        with self._lock:
            for job in jobs:
                self._leased[job.id] = job
            self._sending += len(jobs)
        by_kind: dict[str, list[q.Job]] = {}
        for job in jobs:
            by_kind.setdefault(job.kind, []).append(job)
        contexts: dict[int, Any] = {}
        for kind, kind_jobs in by_kind.items():
            # A failure here leaves the jobs claimed; their leases expire and the
            # reaper returns them, so nothing is lost.
            contexts.update(self.handlers[kind].prepare(conn, kind_jobs))
        for job in jobs:
            pool.submit(self._guarded, self._run_one, job, contexts.get(job.id))

    # -- sender threads --------------------------------------------------------------
    def _run_one(self, job: q.Job, context: Any) -> None:
        fields = {"job_id": job.id, "kind": job.kind, "attempt": job.attempt}
        started = time.monotonic()
        try:
            outcome = self.handlers[job.kind].run(job, context)
        except Exception as exc:  # a handler bug must not kill the worker or lose the job
            log.exception("job %d: unexpected error", job.id, extra=fields)
            outcome = Outcome("retryable", f"unexpected error: {type(exc).__name__}: {exc}")
        retry_in = 0.0
        if outcome.outcome == "retryable":
            retry_in = (
                outcome.retry_in
                if outcome.retry_in is not None
                else (outcome.retry or self.retry_policy).delay(job.attempt)
            )
        elif outcome.outcome == "deferred":
            wait = outcome.retry_in or 1.0
            retry_in = wait + random.uniform(0, wait * 0.1)  # never before Retry-After
        fields["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        fields["outcome"] = outcome.outcome
        self._finishes.put(
            q.Finish(
                job.id, job.lease_token, outcome.outcome, outcome.reason, retry_in, outcome.apply
            )
        )
        with self._lock:
            self._sending -= 1
        self._wake.set()
        level = logging.INFO if outcome.outcome in ("succeeded", "skipped") else logging.WARNING
        log.log(
            level,
            "job %d %s%s",
            job.id,
            outcome.outcome,
            f": {scrub(outcome.reason)}" if outcome.reason else "",
            extra=fields,
        )

    # -- bookkeeper: finishes and lease extensions ------------------------------------
    def _bookkeeper(self) -> None:
        s = self.settings
        conn: psycopg.Connection | None = None
        backoff = _Backoff(cap=s.reconnect_max)
        pending: list[q.Finish] = []
        stopping_at: float | None = None
        next_extend = time.monotonic() + s.lease / 3
        try:
            while True:
                if not pending:
                    try:
                        item = self._finishes.get(timeout=max(0.0, next_extend - time.monotonic()))
                        if item is _STOP:
                            stopping_at = time.monotonic()
                        else:
                            pending.append(item)
                    except queue_lib.Empty:
                        pass
                while True:
                    try:
                        item = self._finishes.get_nowait()
                    except queue_lib.Empty:
                        break
                    if item is _STOP:
                        stopping_at = stopping_at or time.monotonic()
                    else:
                        pending.append(item)
                try:
                    if (pending or time.monotonic() >= next_extend) and (
                        conn is None or conn.closed
                    ):
                        conn = self._connect("worker bookkeeper")
                    if pending:
                        self._record(conn, pending)  # type: ignore[arg-type]
                        pending = []
                    if time.monotonic() >= next_extend:
                        self._extend(conn)  # type: ignore[arg-type]
                        next_extend = time.monotonic() + s.lease / 3
                    backoff.reset()
                except _CONNECTION_ERRORS as exc:
                    self._close(conn)
                    conn = None
                    if stopping_at is not None and time.monotonic() - stopping_at > s.lease:
                        log.error(
                            "could not record %d outcome(s) before stopping: their "
                            "leases expire and the jobs run again (idempotently)",
                            len(pending),
                        )
                        return
                    delay = backoff.next()
                    log.warning(
                        "bookkeeper: database unreachable (%s): retrying in %.1fs",
                        scrub(str(exc).strip()),
                        delay,
                    )
                    time.sleep(delay)
                    continue
                if stopping_at is not None and not pending:
                    return
        finally:
            self._close(conn)

    def _record(self, conn: psycopg.Connection, finishes: list[q.Finish]) -> None:
        plain = [f for f in finishes if f.apply is None]
        results = q.finish(conn, plain)
        applied = [f for f in finishes if f.apply is not None]
        finishes = plain + [self._apply_and_finish(conn, f, results) for f in applied]
        with self._lock:
            jobs = {f.job_id: self._leased.pop(f.job_id, None) for f in finishes}
        for f in finishes:
            job = jobs[f.job_id]
            if not results.get(f.job_id, False):
                self.stats.add("stale")
                log.warning(
                    "job %d: outcome %s ignored: the lease was lost (the job runs "
                    "again; its idempotency key prevents a second delivery)",
                    f.job_id,
                    f.outcome,
                    extra={
                        "job_id": f.job_id,
                        "kind": job.kind if job else None,
                        "attempt": job.attempt if job else None,
                    },
                )
                continue
            self.stats.add(f.outcome)
            if f.outcome in ("retryable", "deferred"):
                with self._lock:
                    self._next_due = min(self._next_due, time.monotonic() + f.retry_in)
        self._wake.set()

    def _apply_and_finish(
        self, conn: psycopg.Connection, f: q.Finish, results: dict[int, bool]
    ) -> q.Finish:
        """A handler's database step and the job's finish, in one transaction: the
        writes stay only if the lease was still ours. Returns the finish recorded."""
        assert f.apply is not None
        try:
            with conn.transaction():
                results.update(q.finish(conn, [f]))
                if not results[f.job_id]:
                    raise psycopg.Rollback()
                f.apply(conn)
            return f
        except _CONNECTION_ERRORS:
            raise
        except Exception as exc:
            reason = f"applying the result failed: {type(exc).__name__}: {scrub(str(exc))}"
            log.warning("job %d: %s", f.job_id, reason, extra={"job_id": f.job_id})
            with self._lock:
                job = self._leased.get(f.job_id)
            delay = self.retry_policy.delay(job.attempt if job else 1)
            failed = q.Finish(f.job_id, f.lease_token, "retryable", reason, delay)
            results.update(q.finish(conn, [failed]))
            return failed

    def _extend(self, conn: psycopg.Connection) -> None:
        with self._lock:
            leases = [(job.id, job.lease_token) for job in self._leased.values()]
        for job_id in q.extend_leases(conn, leases, self.settings.lease):
            log.warning(
                "job %d: lease lost while running (reaped or cancelled)",
                job_id,
                extra={"job_id": job_id},
            )

    # -- listener --------------------------------------------------------------------
    def _listener(self) -> None:
        backoff = _Backoff(cap=self.settings.reconnect_max)
        checked = False  # whether the LISTEN connection was checked for a pooler
        while not self._stopping.is_set():
            conn: psycopg.Connection | None = None
            try:
                conn = self._connect("listen", self.listen_url)
                if not checked:
                    checked = True
                    if not self._may_listen(conn):
                        self.polling_only.set()
                        return
                conn.execute(f"LISTEN {q.CHANNEL}")
                self.listening.set()
                backoff.reset()
                self._notified()  # notifications may have been missed while away
                while not self._stopping.is_set():
                    for _ in conn.notifies(timeout=1.0):
                        self._notified()
            except _CONNECTION_ERRORS as exc:
                self.listening.clear()
                delay = backoff.next()
                log.warning(
                    "LISTEN connection lost (%s): reconnecting in %.1fs",
                    scrub(str(exc).strip()),
                    delay,
                )
                self._stopping.wait(delay)
            finally:
                self.listening.clear()
                self._close(conn)

    def _may_listen(self, conn: psycopg.Connection) -> bool:
        """False when LISTEN would go through a pooler nobody vouched for: in
        transaction mode the LISTEN lands on a server process that serves other
        clients next, and notifications never reach us (PgBouncer drops them)."""
        if not db.through_pooler(conn):
            return True
        if self.listen_url is not None:
            log.warning(
                "the LISTEN database URL (SKENE_LISTEN_DATABASE_URL) goes through a "
                "connection pooler: notifications arrive only if it runs in session mode; "
                "new jobs are picked up by polling every %.1fs otherwise",
                self.settings.poll_interval,
            )
            return True
        log.warning(
            "the database URL goes through a connection pooler (PgBouncer or similar), "
            "where LISTEN hears no notifications: not listening, polling every %.1fs "
            "instead. Set SKENE_LISTEN_DATABASE_URL (--listen-database-url) to a direct "
            "connection to pick up new jobs at once",
            self.settings.poll_interval,
        )
        return False

    def _notified(self) -> None:
        self._signals += 1
        self._more = True
        self._wake.set()
