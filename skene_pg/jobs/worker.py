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

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from skene_pg.jobs import protocol as q
from skene_pg.jobs.bookkeeper import Bookkeeping
from skene_pg.jobs.kinds import Outcome
from skene_pg.jobs.listener import Listening
from skene_pg.jobs.runtime import (
    CONNECTION_ERRORS,
    STOP,
    Backoff,
    Stats,
    WorkerCrashed,
    WorkerSettings,
    one_line,
)
from skene_pg.logs import scrub

log = logging.getLogger(__name__)

__all__ = ["Worker", "WorkerCrashed", "WorkerSettings"]


class Worker(Bookkeeping, Listening):
    """The worker: run() starts the bookkeeper and listener threads and the senders,
    and claims and dispatches jobs on the calling thread until stopped."""

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
            self._finishes.put(STOP)  # then their outcomes are recorded
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
            one_line(exc),
            exc_info=exc,
        )
        self.stop()

    # -- main thread: poll, reap, claim, dispatch --------------------------------
    def _main_loop(self, pool: ThreadPoolExecutor) -> None:
        s = self.settings
        conn: psycopg.Connection | None = None
        backoff = Backoff(cap=s.reconnect_max)
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
                    except CONNECTION_ERRORS as exc:
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
            except CONNECTION_ERRORS:
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
