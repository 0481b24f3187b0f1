"""Operators' views of the queue: list jobs, show one with its attempts."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row


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
            "       j.max_attempts, j.deferrals, j.run_at, j.created_at, j.finished_at, "
            "       j.last_error "
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
