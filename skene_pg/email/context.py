"""What an email needs at send time, read in one query per batch: the customer, plan,
suppression and loop of each job, and for retention messages when quiet hours end."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

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
