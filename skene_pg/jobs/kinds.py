"""What a feature gives the job runtime: handlers for its job kinds, and periodic
tasks. The runtime (worker.py) imports no feature; `skene-pg listen` registers
email, billing and retention with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from skene_pg.jobs.protocol import Job
from skene_pg.jobs.retry import RetryPolicy


@dataclass(frozen=True)
class Outcome:
    """How a handler's attempt ended: outcome is succeeded, skipped, dead, retryable or
    deferred; `reason` is recorded on the job; `retry_in` (seconds) for deferred, and
    optionally for retryable. Otherwise a retryable attempt waits as `retry` says (a
    loop's recovery.backoff), or as the worker's default policy says.

    `apply`, optional: database writes that make the attempt's result stick (a billing
    handler applies what it fetched). The bookkeeper runs it in one transaction with
    the job's finish, and only while the lease is still ours; if it raises, nothing
    of it is kept and the job is retried with the error as its reason."""

    outcome: str
    reason: str | None = None
    retry_in: float | None = None
    retry: RetryPolicy | None = None
    apply: Callable[[psycopg.Connection], None] | None = None


class Handler(Protocol):
    """Runs the jobs of one kind. `prepare` reads what the jobs need from the database
    in one go (main thread); `run` does the work (sender thread, no database)."""

    kind: str

    def prepare(self, conn: psycopg.Connection, jobs: Sequence[Job]) -> dict[int, Any]: ...

    def run(self, job: Job, context: Any) -> Outcome: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PeriodicTask:
    """Work the worker does on its poll, at most every `every` seconds (0: each poll),
    with the worker's connection. Tasks that must run once across many workers
    dedupe in the database (a slot's unique key, or skene.claim_periodic)."""

    name: str
    run: Callable[[psycopg.Connection], object]
    every: float = 0.0
