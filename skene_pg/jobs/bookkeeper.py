"""The bookkeeper thread: records how each attempt ended (skene.finish_job, many per
statement, with a handler's database step in the same transaction) and extends the
leases of running jobs every lease/3."""

from __future__ import annotations

import logging
import queue as queue_lib
import time

import psycopg

from skene_pg.jobs import protocol as q
from skene_pg.jobs.runtime import CONNECTION_ERRORS, STOP, Backoff, WorkerCore
from skene_pg.logs import scrub

log = logging.getLogger("skene_pg.jobs.worker")


class Bookkeeping(WorkerCore):
    def _bookkeeper(self) -> None:
        s = self.settings
        conn: psycopg.Connection | None = None
        backoff = Backoff(cap=s.reconnect_max)
        pending: list[q.Finish] = []
        stopping_at: float | None = None
        next_extend = time.monotonic() + s.lease / 3
        try:
            while True:
                if not pending:
                    try:
                        item = self._finishes.get(timeout=max(0.0, next_extend - time.monotonic()))
                        if item is STOP:
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
                    if item is STOP:
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
                except CONNECTION_ERRORS as exc:
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
        except CONNECTION_ERRORS:
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
