"""The billing SQL, as named calls of the functions in sql/0003_billing.up.sql: the
handlers and the webhook server call these and hold no SQL of their own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def ingest_event(conn: psycopg.Connection, provider: str, payload: dict[str, Any]) -> bool:
    """Store a verified event once per id and queue its sync; False when seen before."""
    row = conn.execute(
        "SELECT skene.ingest_billing_event(%s, %s)", (provider, Jsonb(payload))
    ).fetchone()
    return bool(row and row[0])


def sync_contexts(conn: psycopg.Connection, jobs: Sequence[Any]) -> dict[int, dict[str, Any]]:
    """For each stripe_sync job: the linked skene customer (or None) and `read_at`, the
    database clock before the re-fetch starts (orders concurrent applies)."""
    externals = [str(job.payload.get("external_customer_id") or "") for job in jobs]
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT pg_catalog.clock_timestamp() AS read_at, "
            "       (SELECT pg_catalog.jsonb_object_agg(b.external_customer_id, b.customer_id) "
            "          FROM skene.billing_customers b "
            "         WHERE b.provider = 'stripe' AND b.external_customer_id = ANY (%s)) AS links",
            (externals,),
        )
        row = cur.fetchone()
    assert row is not None
    links = row["links"] or {}
    return {
        job.id: {"read_at": row["read_at"], "customer_id": links.get(external)}
        for job, external in zip(jobs, externals, strict=True)
    }


def apply_subscription(
    conn: psycopg.Connection,
    external_customer_id: str,
    read_at: datetime,
    subscription: dict[str, Any] | None,
    event_id: str | None,
) -> str:
    row = conn.execute(
        "SELECT skene.apply_stripe_subscription(%s, %s, %s, %s)",
        (
            external_customer_id,
            read_at,
            Jsonb(subscription) if subscription is not None else None,
            event_id,
        ),
    ).fetchone()
    return str(row[0]) if row else ""


def pin_meter_reports(
    conn: psycopg.Connection, job_ids: Sequence[int]
) -> dict[int, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM skene.pin_meter_reports(%s)", (list(job_ids),))
        return {row["job_id"]: row for row in cur.fetchall()}


def record_meter_report(
    conn: psycopg.Connection,
    customer_id: str,
    feature: str,
    bucket_start: datetime,
    pending_from: int,
) -> bool:
    row = conn.execute(
        "SELECT skene.record_meter_report(%s, %s, %s, %s)",
        (customer_id, feature, bucket_start, pending_from),
    ).fetchone()
    return bool(row and row[0])


def enqueue_reconcile(conn: psycopg.Connection) -> tuple[int, int]:
    """Queue a sync per linked Stripe customer (once a UTC day); (queued, linked)."""
    row = conn.execute(
        "SELECT skene.enqueue_billing_reconcile(), "
        "       (SELECT count(*) FROM skene.billing_customers b WHERE b.provider = 'stripe')"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def link_and_sync(conn: psycopg.Connection, customer_id: str, stripe_customer: str) -> None:
    """Link a customer to its Stripe customer and queue a sync of it, in one transaction."""
    with conn.transaction():
        conn.execute(
            "SELECT skene.link_billing_customer(%s, 'stripe', %s)", (customer_id, stripe_customer)
        )
        conn.execute(
            "SELECT skene.enqueue('stripe_sync', "
            "  pg_catalog.jsonb_build_object('external_customer_id', %(ext)s::text, "
            "                                'event_type', 'link'), "
            "  %(customer)s, NULL, 'stripe_sync:link:' || %(ext)s || ':' || "
            "  extract(epoch FROM skene.now())::bigint, NULL, 10)",
            {"ext": stripe_customer, "customer": customer_id},
        )


def funnel(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM skene.funnel f ORDER BY f.loop_name")
        return cur.fetchall()
