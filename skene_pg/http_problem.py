"""The HTTP answers of a gate, the same for every framework: a blocked request's 402
as an RFC 9457 problem (`application/problem+json`), the RateLimit headers of an
allowed one, and the 401 and 503 the middleware may give instead.

Pure: a decision (and the feature's gate, and the time) in, a status, a JSON body and
headers out. tests/integrations/problem_vectors.json pins the output, so clients in
other languages can build the same answers from the same file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skene_pg.calls import Decision
from skene_pg.gates import Gate

CONTENT_TYPE = "application/problem+json"
# Problem types are tag URIs (RFC 4151): stable names that are not meant to be fetched.
TYPE_PREFIX = "tag:skene-pg,2025:"
DEFAULT_TITLES = {
    "limit_reached": "Usage limit reached",
    "not_in_plan": "Not included in your plan",
}


@dataclass(frozen=True)
class HttpAnswer:
    """What to send: a status, a JSON body (None: no body) and headers."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


def iso(at: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, seconds precision unless there is more."""
    if at is None:
        return None
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def seconds_until(at: datetime, now: datetime) -> int:
    """Whole seconds from now until `at`, rounded up (a client waiting that long is
    never early), and never negative."""
    return max(0, math.ceil((at - now).total_seconds()))


def ratelimit_headers(decision: Decision, now: datetime) -> dict[str, str]:
    """RateLimit-Limit, -Remaining and -Reset (seconds) for a limited feature; none for
    an unlimited one, and no Reset when usage never resets or waiting can't help."""
    if decision.usage_limit is None:
        return {}
    headers = {
        "RateLimit-Limit": str(decision.usage_limit),
        "RateLimit-Remaining": str(decision.remaining or 0),
    }
    if decision.resets_at is not None and decision.reason != "not_in_plan":
        headers["RateLimit-Reset"] = str(seconds_until(decision.resets_at, now))
    return headers


def tightest(decisions: list[Decision]) -> Decision | None:
    """Of the decisions a request got, the one whose headers it carries: the limited
    feature with the fewest units left (unlimited ones say nothing)."""
    limited = [d for d in decisions if d.usage_limit is not None]
    return min(limited, key=lambda d: d.remaining or 0) if limited else None


def blocked(decision: Decision, gate: Gate | None, now: datetime) -> HttpAnswer:
    """The 402 of a blocked call: title is the freemium loop's message."""
    name = gate.name if gate else decision.feature
    if decision.reason == "not_in_plan":
        detail = f"{name} is not included in the {decision.plan} plan."
    else:
        detail = (
            f"{name}: {decision.used} of {decision.usage_limit} used on the {decision.plan} plan."
        )
    body = {
        "type": TYPE_PREFIX + decision.reason,
        "title": (gate.message if gate else None) or DEFAULT_TITLES.get(decision.reason, "Blocked"),
        "status": 402,
        "detail": detail,
        "reason": decision.reason,
        "feature": decision.feature,
        "plan": decision.plan,
        "used": decision.used,
        "limit": decision.usage_limit,
        "remaining": decision.remaining,
        "resets_at": iso(decision.resets_at),
        "upgrade_url": gate.upgrade_url if gate else None,
    }
    headers = {"Content-Type": CONTENT_TYPE, **ratelimit_headers(decision, now)}
    if "RateLimit-Reset" in headers:
        headers["Retry-After"] = headers["RateLimit-Reset"]
    return HttpAnswer(402, body, headers)


def anonymous(gate: Gate) -> HttpAnswer:
    """401 for a request with no customer, when the settings say anonymous requests
    are not let through a gate."""
    body = {
        "type": TYPE_PREFIX + "anonymous",
        "title": "Sign in to continue",
        "status": 401,
        "detail": f"{gate.name} is metered per customer: this request has none.",
        "feature": gate.feature,
    }
    return HttpAnswer(401, body, {"Content-Type": CONTENT_TYPE})


def unavailable() -> HttpAnswer:
    """503 when the gate could not decide (the database failed), unless failing open."""
    body = {
        "type": TYPE_PREFIX + "unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": "Usage limits could not be checked; try again shortly.",
    }
    return HttpAnswer(503, body, {"Content-Type": CONTENT_TYPE})
