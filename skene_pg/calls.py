"""The SQL contract as Python: each function returns a `Call` (the query, its
parameters, and how its rows become the result), and the results are frozen
dataclasses. `Skene` and `AsyncSkene` (client.py) only execute Calls, so the SQL and
the row mapping exist once for both, and for the request gating of gating.py."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from psycopg.types.json import Jsonb

from skene_pg.gates import Gate

T = TypeVar("T")
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Decision:
    """The gate's answer (skene.decision): None for usage_limit and remaining means
    unlimited, for resets_at that usage never resets. resets_at is in UTC."""

    allowed: bool
    reason: str  # ok | limit_reached | not_in_plan | over_soft_limit | duplicate
    feature: str
    plan: str
    used: int
    usage_limit: int | None
    remaining: int | None
    resets_at: datetime | None


@dataclass(frozen=True)
class Refund:
    """What skene.refund gave back, and the usage after it."""

    refunded: int  # units given back; 0 when nothing was
    reason: str  # refunded | not_counted | expired
    feature: str
    plan: str
    used: int
    usage_limit: int | None
    remaining: int | None
    resets_at: datetime | None


_USAGE_COLUMNS = "feature, plan, used, usage_limit, remaining, resets_at"
_DECISION_COLUMNS = f"allowed, reason, {_USAGE_COLUMNS}"
_REFUND_COLUMNS = f"refunded, reason, {_USAGE_COLUMNS}"


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def decision_from_row(row: Row) -> Decision:
    allowed, reason, feature, plan, used, usage_limit, remaining, resets_at = row
    return Decision(allowed, reason, feature, plan, used, usage_limit, remaining, _utc(resets_at))


def _one_decision(rows: Sequence[Row]) -> Decision:
    return decision_from_row(rows[0])


def _one_refund(rows: Sequence[Row]) -> Refund:
    refunded, reason, feature, plan, used, usage_limit, remaining, resets_at = rows[0]
    return Refund(refunded, reason, feature, plan, used, usage_limit, remaining, _utc(resets_at))


def _nothing(rows: Sequence[Row]) -> None:
    return None


def _gates(rows: Sequence[Row]) -> list[Gate]:
    return [Gate.from_row(row) for row in rows]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One round trip: a query, its parameters, and how its rows become the result."""

    query: str
    params: tuple[Any, ...]
    result: Callable[[Sequence[Row]], T]


def check(customer: str, feature: str, amount: int) -> Call[Decision]:
    return Call(
        f"SELECT {_DECISION_COLUMNS} FROM skene.check(%s::text, %s::text, %s::bigint)",
        (customer, feature, amount),
        _one_decision,
    )


def check_and_increment(
    customer: str, feature: str, amount: int, idempotency_key: str | None
) -> Call[Decision]:
    return Call(
        f"SELECT {_DECISION_COLUMNS} FROM skene.check_and_increment("
        "%s::text, %s::text, %s::bigint, %s::text)",
        (customer, feature, amount, idempotency_key),
        _one_decision,
    )


def refund(customer: str, feature: str, amount: int | None, idempotency_key: str) -> Call[Refund]:
    return Call(
        f"SELECT {_REFUND_COLUMNS} FROM skene.refund(%s::text, %s::text, %s::bigint, %s::text)",
        (customer, feature, amount, idempotency_key),
        _one_refund,
    )


def identify(
    customer: str,
    email: str | None,
    name: str | None,
    attributes: dict[str, Any] | None,
    timezone: str | None,
) -> Call[None]:
    return Call(
        "SELECT skene.identify(%s::text, %s::text, %s::text, %s::jsonb, %s::text)",
        (customer, email, name, Jsonb(attributes) if attributes is not None else None, timezone),
        _nothing,
    )


def track(
    customer: str, event: str, properties: dict[str, Any] | None, occurred_at: datetime | None
) -> Call[None]:
    params: tuple[Any, ...] = (customer, event, Jsonb(properties or {}))
    if occurred_at is None:  # the function's default: now, on skene's clock
        return Call("SELECT skene.track(%s::text, %s::text, %s::jsonb)", params, _nothing)
    return Call(
        "SELECT skene.track(%s::text, %s::text, %s::jsonb, %s::timestamptz)",
        (*params, occurred_at),
        _nothing,
    )


def list_gates() -> Call[list[Gate]]:
    return Call("SELECT feature, name, match, message, upgrade_url FROM skene.gates()", (), _gates)


# A sequence of calls whose next call depends on the last result (gating.py): the
# generator yields Calls, is sent their results (or thrown their SkeneErrors), and
# returns its outcome. Skene.drive and AsyncSkene.drive run one.
Steps = Generator[Call[Any], Any, T]
