"""The worker's Stripe jobs, through the official `stripe` SDK.

`stripe_sync`: a webhook (or `skene-pg billing reconcile`) is only a signal. The job
re-fetches the customer's subscriptions from Stripe and returns an `Outcome.apply` that
the bookkeeper runs with the job's finish: skene.apply_stripe_subscription maps the
prices to a plan (skene.plan_prices), calls skene.set_plan and
skene.set_billing_period. `read_at` (the database clock read in `prepare`, before the
fetch) orders applies: one read before the last applied one is stale and changes
nothing, so the final plan is always from a fetch that started after the last change.

`stripe_meter`: one job per customer, metered feature and UTC hour (queued by the
usage trigger). `prepare` pins the units to send (skene.pin_meter_reports), so every
retry sends the same identifier (`skene:customer:feature:hour:offset`), value and
timestamp, also as Stripe's Idempotency-Key: a retry after a crash never bills twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
import stripe

from skene_pg.billing import queries
from skene_pg.jobs.kinds import Outcome
from skene_pg.jobs.protocol import Job

DEFAULT_API_URL = "https://api.stripe.com"
# Subscriptions that keep their plan: past_due is still billed (Stripe retries the
# payment and cancels or marks it unpaid when it gives up). paused, canceled, unpaid,
# incomplete and incomplete_expired mean the default plan.
CURRENT_STATUSES = ("active", "trialing", "past_due")
STRIPE_MAX_AGE = timedelta(days=35)  # meter events must be at most this old
AUTH_RETRY_AFTER = 60.0  # a rejected key is the operator's to fix: wait, don't fail jobs
UNLINKED_RETRY_AFTER = 3600.0


def make_client(api_key: str, api_url: str | None = None, timeout: float = 10.0) -> Any:
    """A StripeClient; `api_url` points it elsewhere (tests: a loopback fake)."""
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_url or DEFAULT_API_URL},
        max_network_retries=0,  # the worker retries, with backoff and a lease
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    to_dict = getattr(obj, "to_dict", None)
    return to_dict() if to_dict else dict(obj)


def current_subscription(subscriptions: Sequence[Any]) -> dict[str, Any] | None:
    """The subscription that decides the plan: the newest current one, or None."""
    current = [_as_dict(s) for s in subscriptions]
    current = [s for s in current if s.get("status") in CURRENT_STATUSES]
    if not current:
        return None
    sub = max(current, key=lambda s: (s.get("created") or 0, s.get("id") or ""))
    items = (sub.get("items") or {}).get("data") or []
    prices = [(item.get("price") or {}).get("id") for item in items]
    # since API version 2025-03-31 the period is on the items
    starts = [i.get("current_period_start") for i in items if i.get("current_period_start")]
    ends = [i.get("current_period_end") for i in items if i.get("current_period_end")]
    return {
        "id": sub.get("id"),
        "status": sub.get("status"),
        "price_ids": [p for p in prices if p],
        "period_start": min(starts) if starts else sub.get("current_period_start"),
        "period_end": min(ends) if ends else sub.get("current_period_end"),
    }


def _error_outcome(exc: stripe.StripeError) -> Outcome:
    status = getattr(exc, "http_status", None)
    message = f"Stripe {status or 'error'}: {getattr(exc, 'user_message', None) or exc}"
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        headers = getattr(exc, "headers", None) or {}
        try:
            wait = float(headers.get("Retry-After") or headers.get("retry-after") or 5)
        except (TypeError, ValueError):
            wait = 5.0
        return Outcome("deferred", message, retry_in=wait)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return Outcome("deferred", message, retry_in=AUTH_RETRY_AFTER)
    if status is not None and 400 <= status < 500:
        return Outcome("dead", message)
    return Outcome("retryable", message)


class StripeSyncHandler:
    kind = "stripe_sync"

    def __init__(self, client: Any):
        self.client = client

    def prepare(self, conn: psycopg.Connection, jobs: Sequence[Job]) -> dict[int, Any]:
        return queries.sync_contexts(conn, jobs)

    def run(self, job: Job, context: Any) -> Outcome:
        external = str(job.payload.get("external_customer_id") or "")
        event_id = job.payload.get("event_id")
        read_at = context["read_at"]

        def apply(sub: dict[str, Any] | None) -> Any:
            return lambda conn: queries.apply_subscription(conn, external, read_at, sub, event_id)

        if context.get("customer_id") is None:
            return Outcome(
                "skipped",
                f"Stripe customer {external} is linked to no skene customer "
                "(client_reference_id, metadata.skene_customer_id or "
                "skene.link_billing_customer)",
                apply=apply(None),  # marks the event processed, changes no plan
            )
        try:
            listed = self.client.v1.subscriptions.list(
                params={"customer": external, "status": "all", "limit": 100}
            )
            subscriptions = list(listed.auto_paging_iter())
        except stripe.StripeError as exc:
            return _error_outcome(exc)
        return Outcome("succeeded", apply=apply(current_subscription(subscriptions)))

    def close(self) -> None:
        pass


def _is_duplicate(exc: stripe.StripeError) -> bool:
    text = str(exc).lower()
    return "identifier" in text and ("already" in text or "duplicate" in text)


class StripeMeterHandler:
    kind = "stripe_meter"

    def __init__(self, client: Any):
        self.client = client

    def prepare(self, conn: psycopg.Connection, jobs: Sequence[Job]) -> dict[int, Any]:
        return queries.pin_meter_reports(conn, [job.id for job in jobs])

    def run(self, job: Job, context: Any) -> Outcome:
        if not context or context.get("value") is None:
            return Outcome("skipped", "no usage bucket for this report")
        bucket: datetime = context["bucket_start"]
        assert job.customer_id is not None
        customer_id = job.customer_id

        def record(conn: psycopg.Connection) -> None:
            queries.record_meter_report(
                conn, customer_id, job.payload["feature"], bucket, context["pending_from"]
            )

        if context["value"] <= 0:
            return Outcome("succeeded", "nothing to report", apply=record)
        if not context.get("event_name"):
            return Outcome("dead", f"feature {job.payload.get('feature')!r} has no meter")
        if not context.get("stripe_customer_id"):
            return Outcome(
                "deferred",
                f"customer {customer_id} is linked to no Stripe customer yet",
                retry_in=UNLINKED_RETRY_AFTER,
            )
        timestamp = int((bucket + timedelta(hours=1)).timestamp()) - 1  # the hour's last second
        now = time.time()
        if timestamp > now + 240:  # Stripe takes at most 5 minutes ahead
            return Outcome("deferred", "the hour is not over yet", retry_in=timestamp - now - 240)
        if now - timestamp > STRIPE_MAX_AGE.total_seconds() - 3600:
            return Outcome("dead", "the usage is older than Stripe accepts (35 days)")
        try:
            self.client.v1.billing.meter_events.create(
                params={
                    "event_name": context["event_name"],
                    "payload": {
                        "stripe_customer_id": context["stripe_customer_id"],
                        "value": str(context["value"]),
                    },
                    "identifier": context["identifier"],
                    "timestamp": timestamp,
                },
                options={"idempotency_key": context["identifier"]},
            )
        except stripe.StripeError as exc:
            if not _is_duplicate(exc):
                return _error_outcome(exc)
        return Outcome("succeeded", apply=record)

    def close(self) -> None:
        pass
