"""The gate of one request, for every framework: which calls to make and what each
outcome means, written once as `calls.Steps` generators. Django runs them with
`Skene.drive`, FastAPI with `AsyncSkene.drive`; neither repeats the logic.

A request matched by gates is counted against each of their features in name order.
The first block answers 402 and gives back what the request counted before it (a
request that is not served uses nothing). A database failure answers 503, or lets the
request through when the policy fails open; both are logged. A request with no
customer passes ungated, or gets 401.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from skene_pg import calls, http_problem
from skene_pg.calls import Decision, Steps
from skene_pg.errors import SkeneError
from skene_pg.gates import Gate, GateCache, GateTable
from skene_pg.http_problem import HttpAnswer

log = logging.getLogger("skene_pg.gate")

ANONYMOUS = ("pass", "401")
ON_ERROR = ("503", "open")


@dataclass(frozen=True)
class Policy:
    """What the middleware does besides counting (Django's SKENE settings, the
    arguments of FastAPI's SkeneGate)."""

    anonymous: str = "pass"  # "pass": ungated; "401": refused
    on_error: str = "503"  # "503": refused; "open": let through
    refund_on_error: bool = False  # give the count back when the view fails (5xx, raises)

    def __post_init__(self) -> None:
        if self.anonymous not in ANONYMOUS:
            raise ValueError(f"anonymous must be one of {ANONYMOUS}, got {self.anonymous!r}")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")


@dataclass(frozen=True)
class Counted:
    """A count a request made with an idempotency key, so it can be given back."""

    feature: str
    key: str
    amount: int


@dataclass
class GateResult:
    answer: HttpAnswer | None = None  # send this instead of the view's response
    decisions: list[Decision] = field(default_factory=list)  # what the request was counted as
    counted: list[Counted] = field(default_factory=list)  # refundable if the view fails

    def headers(self, now: datetime | None = None) -> dict[str, str]:
        """RateLimit headers for the view's response."""
        decision = http_problem.tightest(self.decisions)
        if decision is None:
            return {}
        return http_problem.ratelimit_headers(decision, now or datetime.now(UTC))


def request_key() -> str:
    """An idempotency key for one request's count. Never the client's own header: a
    replayed key would get the first call's 'allowed' back without counting."""
    return f"req:{uuid.uuid4().hex}"


def read_table(cache: GateCache) -> Steps[GateTable]:
    """The gates, from the cache while fresh; a failed read keeps the last good table."""
    table = cache.fresh()
    if table is not None:
        return table
    try:
        gates = yield calls.list_gates()
    except SkeneError as exc:
        stale = cache.stale()
        if stale is None:
            raise
        log.warning("skene: reading the gates failed, using the last ones read: %s", exc)
        return stale
    return cache.store(gates)


def gate_request(
    gates: list[Gate],
    customer: str | None,
    amount: int,
    policy: Policy,
    now: datetime | None = None,
) -> Steps[GateResult]:
    """Count one request against `gates` for `customer`."""
    if not gates:
        return GateResult()
    if customer is None:
        refused = policy.anonymous == "401"
        return GateResult(http_problem.anonymous(gates[0]) if refused else None)
    # Keys cost a write each; they are needed only to give counts back.
    keyed = policy.refund_on_error or len(gates) > 1
    result = GateResult()
    for gate in gates:
        key = request_key() if keyed else None
        try:
            decision = yield calls.check_and_increment(customer, gate.feature, amount, key)
        except SkeneError as exc:
            result.answer = yield from _failed(exc, policy, customer, result.counted)
            if result.answer is not None:
                result.counted = []
            return result
        result.decisions.append(decision)
        if not decision.allowed:
            yield from refund(customer, result.counted)
            result.counted = []
            result.answer = http_problem.blocked(decision, gate, now or datetime.now(UTC))
            return result
        if key is not None:
            result.counted.append(Counted(gate.feature, key, amount))
    return result


def failed_answer(
    exc: SkeneError, policy: Policy, customer: str | None = None
) -> HttpAnswer | None:
    """What a request gets when the gate could not decide: 503, or None (let through)
    when the policy fails open. Logged either way."""
    who = f" for {customer}" if customer is not None else ""
    if policy.on_error == "open":
        log.warning("skene: gate failed%s, letting the request through: %r", who, exc)
        return None
    log.error("skene: gate failed%s, answering 503: %r", who, exc)
    return http_problem.unavailable()


def _failed(
    exc: SkeneError, policy: Policy, customer: str, counted: list[Counted]
) -> Steps[HttpAnswer | None]:
    answer = failed_answer(exc, policy, customer)
    if answer is not None:
        yield from refund(customer, counted)  # the request is not served
    return answer


def refund(customer: str, counted: list[Counted]) -> Steps[None]:
    """Give back every count of a request; a failure is logged, never raised (the
    response is on its way)."""
    for item in counted:
        try:
            yield calls.refund(customer, item.feature, item.amount, item.key)
        except SkeneError as exc:
            log.error("skene: refund of %s for %s failed: %r", item.feature, customer, exc)


def failed_response(status: int) -> bool:
    """Whether a view's response means the request was not served."""
    return status >= 500
