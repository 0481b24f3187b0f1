"""The queue protocol as named SQL calls: every change to a job goes through one of the
skene functions of the worker migration (claim_jobs, extend_lease, finish_job,
reap_expired_leases, retry_job, cancel_job); this module only calls them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

CHANNEL = "skene_jobs"  # skene.enqueue and skene.retry_job NOTIFY here
OUTCOMES = ("succeeded", "skipped", "dead", "retryable", "deferred")


@dataclass(frozen=True)
class Job:
    """One claimed job: what the worker needs to run it and to finish it."""

    id: int
    kind: str
    payload: dict[str, Any]
    customer_id: str | None
    loop_name: str | None
    idempotency_key: str
    attempt: int  # this attempt's number: deferrals (quiet hours, rate limits) not counted
    max_attempts: int
    lease_token: UUID
    deferrals: int = 0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        return cls(
            id=row["id"],
            kind=row["kind"],
            payload=row["payload"] or {},
            customer_id=row["customer_id"],
            loop_name=row["loop_name"],
            idempotency_key=row["idempotency_key"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            lease_token=row["lease_token"],
            deferrals=row.get("deferrals", 0),
        )


@dataclass(frozen=True)
class Finish:
    """How one attempt ended: outcome is one of OUTCOMES; retry_in (seconds) for
    retryable and deferred; `apply`: the handler's database step, run with the finish
    in one transaction (skene_pg.jobs.kinds.Outcome.apply)."""

    job_id: int
    lease_token: UUID
    outcome: str
    error: str | None = None
    retry_in: float = 0.0
    apply: Callable[[psycopg.Connection], None] | None = field(default=None, compare=False)


def claim(
    conn: psycopg.Connection,
    worker: str,
    max_jobs: int,
    lease: float,
    kinds: Sequence[str] | None = None,
) -> list[Job]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM skene.claim_jobs(%s, %s, %s, %s)",
            (worker, max_jobs, timedelta(seconds=lease), list(kinds) if kinds else None),
        )
        return [Job.from_row(row) for row in cur.fetchall()]


def extend_leases(
    conn: psycopg.Connection, leases: Iterable[tuple[int, UUID]], lease: float
) -> list[int]:
    """Extend every lease; returns the ids of jobs whose lease was lost."""
    pairs = list(leases)
    if not pairs:
        return []
    rows = conn.execute(
        "SELECT l.id FROM unnest(%s::bigint[], %s::uuid[]) AS l(id, token) "
        "WHERE NOT skene.extend_lease(l.id, l.token, %s)",
        ([p[0] for p in pairs], [p[1] for p in pairs], timedelta(seconds=lease)),
    ).fetchall()
    return [row[0] for row in rows]


def finish(conn: psycopg.Connection, finishes: Sequence[Finish]) -> dict[int, bool]:
    """Record how attempts ended, in one statement; job id -> False when the lease
    token no longer matched (a stale worker: nothing was changed)."""
    if not finishes:
        return {}
    rows = conn.execute(
        "SELECT f.id, skene.finish_job(f.id, f.token, f.outcome, f.error, "
        "       skene.now() + f.retry_in * interval '1 second') "
        "FROM unnest(%s::bigint[], %s::uuid[], %s::text[], %s::text[], %s::float8[]) "
        "     WITH ORDINALITY AS f(id, token, outcome, error, retry_in, n) ORDER BY f.n",
        (
            [f.job_id for f in finishes],
            [f.lease_token for f in finishes],
            [f.outcome for f in finishes],
            [f.error for f in finishes],
            [f.retry_in for f in finishes],
        ),
    ).fetchall()
    return {row[0]: bool(row[1]) for row in rows}


def reap(conn: psycopg.Connection, max_lost: int = 3) -> int:
    row = conn.execute("SELECT skene.reap_expired_leases(%s)", (max_lost,)).fetchone()
    return int(row[0]) if row else 0


def retry(conn: psycopg.Connection, job_id: int) -> None:
    conn.execute("SELECT skene.retry_job(%s)", (job_id,))


def cancel(conn: psycopg.Connection, job_id: int) -> bool:
    row = conn.execute("SELECT skene.cancel_job(%s)", (job_id,)).fetchone()
    return bool(row and row[0])
