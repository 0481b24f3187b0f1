"""Email jobs: the send-time eligibility check, the template variables, the links, and
the provider call, mapped to job outcomes. No SQL: the worker reads each job's
customer, plan, suppression and loop (skene_pg.queue.email_contexts) and passes them in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import formataddr
from typing import Any
from urllib.parse import quote, urlencode

import psycopg

from skene_pg.config.model import duration_seconds
from skene_pg.email import context as email_context
from skene_pg.email.base import (
    DeferEmail,
    Email,
    EmailProvider,
    PermanentEmailError,
    TransientEmailError,
    one_line,
)
from skene_pg.email.templates import TemplateFailure, TemplateRenderer, Vars, ensure_unsubscribe
from skene_pg.jobs.kinds import Outcome
from skene_pg.jobs.protocol import Job
from skene_pg.jobs.retry import DEFAULT_RETRY_BASE, RetryPolicy

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


@dataclass(frozen=True)
class EmailSettings:
    """Sender and links. `upgrade_url` may hold {customer_id}, {feature} and {plan};
    `unsubscribe_url` may hold {customer_id} and {token} (else ?customer=&token= is
    appended). Both default to paths under `app_url`."""

    sender: str
    app_url: str
    upgrade_url: str | None = None
    unsubscribe_url: str | None = None
    unsubscribe_secret: str | None = None

    def upgrade_link(self, customer_id: str, feature: str | None, plan: str | None) -> str:
        base = self.upgrade_url or f"{self.app_url.rstrip('/')}/upgrade"
        return _fill(base, customer_id=customer_id, feature=feature or "", plan=plan or "")

    def unsubscribe_link(self, customer_id: str) -> str:
        token = (
            unsubscribe_token(self.unsubscribe_secret, customer_id)
            if self.unsubscribe_secret
            else ""
        )
        base = self.unsubscribe_url or f"{self.app_url.rstrip('/')}/unsubscribe"
        if "{customer_id}" in base:
            return _fill(base, customer_id=customer_id, token=token)
        query = {"customer": customer_id, **({"token": token} if token else {})}
        return base + ("&" if "?" in base else "?") + urlencode(query)


def unsubscribe_token(secret: str | None, customer_id: str) -> str:
    """HMAC-SHA256 of the customer id keyed with SKENE_UNSUBSCRIBE_SECRET, hex: the
    app's unsubscribe endpoint recomputes it before calling skene.unsubscribe()."""
    return hmac.new((secret or "").encode(), customer_id.encode(), hashlib.sha256).hexdigest()


def verify_unsubscribe_token(secret: str, customer_id: str, token: str) -> bool:
    return hmac.compare_digest(unsubscribe_token(secret, customer_id), token)


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", quote(value, safe=""))
    return template


def _vars(label: str, values: Mapping[str, Any]) -> Vars:
    return Vars(
        label,
        {k: _vars(f"{label}.{k}", v) if isinstance(v, Mapping) else v for k, v in values.items()},
    )


def _when(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def is_upgrade_prompt(payload: Mapping[str, Any], loop_type: str | None) -> bool:
    return loop_type == "freemium" or payload.get("template") == "upgrade_prompt"


def skip_reason(
    context: Mapping[str, Any] | None, payload: Mapping[str, Any], customer_id: str | None
) -> str | None:
    """Why this email must not go out now, or None. Checked at send time."""
    if not context or context.get("customer_id") is None:
        return f"customer {customer_id!r} does not exist"
    if not context.get("email"):
        return "the customer has no email address"
    if context.get("unsubscribed_at") is not None:
        return f"the customer unsubscribed at {context['unsubscribed_at']:%Y-%m-%d %H:%M:%S%z}"
    if context.get("suppression_reason"):
        source = context.get("suppression_source")
        return (
            f"the address is suppressed ({context['suppression_reason']}"
            f"{', ' + source if source else ''})"
        )
    if is_upgrade_prompt(payload, context.get("loop_type")) and context.get("paid"):
        return f"the customer is already on the paid plan {context['plan']!r}"
    # a retention message is for one dormancy episode: activity since ends it (also
    # activity that raced the loop run that queued the message)
    last_activity = context.get("last_activity_at")
    episode_start = payload.get("episode_start")
    if (
        context.get("loop_type") == "retention"
        and last_activity
        and episode_start
        # the payload keeps whole seconds: the episode's own start is no comeback
        and last_activity.replace(microsecond=0) > datetime.fromisoformat(episode_start)
    ):
        return f"the customer was active again at {last_activity:%Y-%m-%d %H:%M:%S%z}"
    return None


def template_variables(
    job_customer_id: str,
    payload: Mapping[str, Any],
    context: Mapping[str, Any],
    loop_name: str | None,
    settings: EmailSettings,
) -> dict[str, Any]:
    customer = {
        "id": job_customer_id,
        "customer_id": job_customer_id,
        "email": context.get("email"),
        "name": context.get("name"),
        "plan": context.get("plan"),
        "paid": bool(context.get("paid")),
        "timezone": context.get("timezone"),
        "created_at": context.get("created_at"),
        "last_activity_at": context.get("last_activity_at"),
        "attributes": context.get("attributes") or {},
    }
    used, limit = payload.get("used"), payload.get("usage_limit")
    usage = {
        "feature": payload.get("feature"),
        "reason": payload.get("reason"),
        "plan": payload.get("plan", context.get("plan")),
        "used": used,
        "usage_limit": limit,
        "limit": limit,
        "remaining": max(limit - used, 0)
        if isinstance(used, int) and isinstance(limit, int)
        else None,
        # the blocked call's amount; None in prompts queued before it was recorded
        "requested": payload.get("requested"),
        "resets_at": _when(payload.get("resets_at")),
        "period_start": _when(payload.get("period_start")),
    }
    loop_config = context.get("loop_config") or {}
    loop = {
        "name": loop_name,
        "type": context.get("loop_type"),
        "message": payload.get("message") or loop_config.get("message"),
        "config": loop_config,
    }
    customer_vars = _vars("customer", customer)
    return {
        "customer": customer_vars,
        "user": _vars("user", customer),
        "usage": _vars("usage", usage),
        "loop": _vars("loop", loop),
        "payload": _vars("payload", payload),
        "app_url": settings.app_url,
        "upgrade_url": settings.upgrade_link(job_customer_id, usage["feature"], usage["plan"]),
        "unsubscribe_url": settings.unsubscribe_link(job_customer_id),
    }


def compose(
    job_id: int,
    customer_id: str,
    idempotency_key: str,
    payload: Mapping[str, Any],
    context: Mapping[str, Any],
    loop_name: str | None,
    renderer: TemplateRenderer,
    settings: EmailSettings,
) -> Email:
    """The email for a job; raises TemplateFailure or PermanentEmailError."""
    template = payload.get("template")
    if not template:
        raise TemplateFailure(f"job {job_id} has no template in its payload")
    address = str(context["email"]).strip()
    if not _ADDRESS.match(address):
        raise PermanentEmailError("bad address: not a valid email address")
    variables = template_variables(customer_id, payload, context, loop_name, settings)
    unsubscribe = variables["unsubscribe_url"]
    rendered = ensure_unsubscribe(renderer.render(str(template), variables), unsubscribe)
    name = one_line(str(context.get("name") or ""))
    to = formataddr((name, address)) if name else address
    return Email(
        sender=settings.sender,
        to=to,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        idempotency_key=idempotency_key,
        headers={
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


class EmailHandler:
    kind = "email"

    def __init__(
        self, provider: EmailProvider, renderer: TemplateRenderer, settings: EmailSettings
    ):
        self.provider = provider
        self.renderer = renderer
        self.settings = settings

    def prepare(self, conn: psycopg.Connection, jobs: Sequence[Job]) -> dict[int, Any]:
        contexts = email_context.email_contexts(conn, [job.id for job in jobs])
        retention = [i for i, c in contexts.items() if c.get("loop_type") == "retention"]
        for job_id, window in email_context.retention_send_after(conn, retention).items():
            contexts[job_id]["send_after"], contexts[job_id]["now"] = window
        return contexts

    def run(self, job: Job, context: Any) -> Outcome:
        reason = skip_reason(context, job.payload, job.customer_id)
        if reason:
            return Outcome("skipped", reason)
        send_after = context.get("send_after")
        if send_after and send_after > context["now"]:
            # a retry or deferral that fell into the customer's quiet hours
            return Outcome(
                "deferred",
                f"quiet hours in the customer's time zone until {send_after:%Y-%m-%d %H:%M%z}",
                retry_in=(send_after - context["now"]).total_seconds(),
            )
        assert job.customer_id is not None
        try:
            email = compose(
                job.id,
                job.customer_id,
                job.idempotency_key,
                job.payload,
                context,
                job.loop_name,
                self.renderer,
                self.settings,
            )
        except TemplateFailure as exc:
            return Outcome("dead", exc.reason)
        except PermanentEmailError as exc:
            return Outcome("dead", exc.reason)
        try:
            self.provider.send(email)
        except DeferEmail as exc:
            return Outcome("deferred", exc.reason, retry_in=exc.retry_after)
        except PermanentEmailError as exc:
            return Outcome("dead", exc.reason)
        except TransientEmailError as exc:
            return Outcome("retryable", exc.reason, retry=recovery_policy(context))
        return Outcome("succeeded")

    def close(self) -> None:
        self.provider.close()


def recovery_policy(context: Mapping[str, Any]) -> RetryPolicy | None:
    """The retry schedule of the job's loop (`recovery = { backoff, base }`), or None
    for the worker's default. apply has validated both keys."""
    recovery = (context.get("loop_config") or {}).get("recovery") or {}
    if "backoff" not in recovery and "base" not in recovery:
        return None
    base = duration_seconds(recovery["base"]) if "base" in recovery else None
    return RetryPolicy(recovery.get("backoff", "exponential"), float(base or DEFAULT_RETRY_BASE))


def drain_to_outbox(
    database_url: str,
    directory: str,
    *,
    templates_dir: str | None = None,
    sender: str = "skene-pg <noreply@localhost>",
    app_url: str = "http://localhost:8000",
) -> dict[str, int]:
    """Send every due email job into an outbox folder and return the counts: what
    `make demo` runs (`skene-pg listen --drain --email-provider outbox` in one call)."""
    from skene_pg.email.outbox import OutboxProvider
    from skene_pg.jobs.worker import Worker, WorkerSettings

    handler = EmailHandler(
        OutboxProvider(directory),
        TemplateRenderer(templates_dir),
        EmailSettings(sender=sender, app_url=app_url),
    )
    return Worker(database_url, [handler], WorkerSettings(drain=True)).run().as_dict()
