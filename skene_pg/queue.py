"""The queue protocol as named SQL calls: every change to a job goes through one of the
skene functions of sql/0002_worker.up.sql; this module only calls them and reads."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
    attempt: int
    max_attempts: int
    lease_token: UUID

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
        )


@dataclass(frozen=True)
class Finish:
    """How one attempt ended: outcome is one of OUTCOMES; retry_in (seconds) for
    retryable and deferred; `apply`: the handler's database step, run with the finish
    in one transaction (skene_pg.worker.Outcome.apply)."""

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


# -- what an email needs at send time ---------------------------------------------

# last_activity_at through to_jsonb: NULL until the retention migration adds the
# column, then its value, with no change here.
_EMAIL_CONTEXT = """
SELECT j.id AS job_id, c.customer_id, c.email, c.name, c.attributes, c.timezone, c.plan,
       c.created_at, c.unsubscribed_at,
       (pg_catalog.to_jsonb(c) ->> 'last_activity_at')::timestamptz AS last_activity_at,
       coalesce(p.paid, false) AS paid,
       s.reason AS suppression_reason, s.source AS suppression_source,
       l.type AS loop_type, l.config AS loop_config
  FROM pg_catalog.unnest(%s::bigint[]) AS i(id)
  JOIN skene.jobs j ON j.id = i.id
  LEFT JOIN skene.customers c ON c.customer_id = j.customer_id
  LEFT JOIN skene.plans p ON p.plan = c.plan
  LEFT JOIN skene.suppressions s ON s.email = pg_catalog.lower(pg_catalog.btrim(c.email))
  LEFT JOIN skene.loops l ON l.name = j.loop_name
"""


def email_contexts(conn: psycopg.Connection, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Customer, plan, suppression and loop of each job, read in one query."""
    if not job_ids:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_EMAIL_CONTEXT, (list(job_ids),))
        return {row["job_id"]: row for row in cur.fetchall()}


def retention_send_after(
    conn: psycopg.Connection, job_ids: Sequence[int]
) -> dict[int, tuple[datetime, datetime]]:
    """(send after, now) of each retention job: the end of its loop's quiet hours in
    the customer's time zone, or now."""
    if not job_ids:
        return {}
    rows = conn.execute(
        "SELECT job_id, send_after, now FROM skene.retention_send_after(%s)", (list(job_ids),)
    ).fetchall()
    return {job_id: (send_after, now) for job_id, send_after, now in rows}


def customer_context(conn: psycopg.Connection, customer_id: str) -> dict[str, Any] | None:
    """The same facts for a customer with no job (template previews)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT c.customer_id, c.email, c.name, c.attributes, c.timezone, c.plan, "
            "       c.created_at, c.unsubscribed_at, "
            "       (pg_catalog.to_jsonb(c) ->> 'last_activity_at')::timestamptz "
            "         AS last_activity_at, "
            "       coalesce(p.paid, false) AS paid, "
            "       s.reason AS suppression_reason, s.source AS suppression_source "
            "  FROM skene.customers c LEFT JOIN skene.plans p ON p.plan = c.plan "
            "  LEFT JOIN skene.suppressions s "
            "         ON s.email = pg_catalog.lower(pg_catalog.btrim(c.email)) "
            " WHERE c.customer_id = %s",
            (customer_id,),
        )
        return cur.fetchone()


def latest_email_job(
    conn: psycopg.Connection, customer_id: str, template: str
) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT j.id, j.payload, j.loop_name, j.idempotency_key, l.type AS loop_type, "
            "       l.config AS loop_config "
            "  FROM skene.jobs j LEFT JOIN skene.loops l ON l.name = j.loop_name "
            " WHERE j.customer_id = %s AND j.kind = 'email' AND j.payload ->> 'template' = %s "
            " ORDER BY j.created_at DESC, j.id DESC LIMIT 1",
            (customer_id, template),
        )
        return cur.fetchone()


# -- operators' views -----------------------------------------------------------


def list_jobs(
    conn: psycopg.Connection,
    *,
    state: str | None = None,
    kind: str | None = None,
    customer_id: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT j.id, j.kind, j.state, j.customer_id, j.loop_name, j.attempt, "
            "       j.max_attempts, j.run_at, j.created_at, j.finished_at, j.last_error "
            "  FROM skene.jobs j "
            " WHERE (%(state)s::text IS NULL OR j.state = %(state)s) "
            "   AND (%(kind)s::text IS NULL OR j.kind = %(kind)s) "
            "   AND (%(customer)s::text IS NULL OR j.customer_id = %(customer)s) "
            " ORDER BY j.id DESC LIMIT %(limit)s",
            {"state": state, "kind": kind, "customer": customer_id, "limit": limit},
        )
        return cur.fetchall()


def get_job(conn: psycopg.Connection, job_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM skene.jobs j WHERE j.id = %s", (job_id,))
        job = cur.fetchone()
        if job is None:
            return None
        cur.execute(
            "SELECT a.attempt, a.worker, a.started_at, a.finished_at, a.outcome, a.error "
            "  FROM skene.job_attempts a WHERE a.job_id = %s ORDER BY a.attempt",
            (job_id,),
        )
        job["attempts"] = cur.fetchall()
        return job


def to_json(value: Any) -> str:
    """JSON for --json output: datetimes as ISO 8601, UUIDs as strings."""

    def default(obj: Any) -> Any:
        if isinstance(obj, datetime):
            return obj.isoformat()
        return str(obj)

    return json.dumps(value, default=default)
