"""What a valid `skene.toml` becomes (plans, features, loops), the names and values it
may hold, and how a mistake is reported (Problem, ConfigError)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Key = str | int  # a table key, or an index into an array
FieldPath = tuple[Key, ...]

# The same patterns as the CHECK constraints on skene.plans and skene.features, so a
# file that validates never fails on insert.
PLAN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
FEATURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
# No ':' in loop names: the SQL joins them into dedupe keys with ':'.
LOOP_NAME = PLAN_NAME
PERIODS = ("day", "week", "month", "billing_cycle", "lifetime")
LOOP_TYPES = ("freemium", "retention", "milestone")
CHANNELS = ("email",)  # more channels come with their senders
BACKOFFS = ("exponential", "linear", "fixed")  # skene_pg.jobs.retry.RetryPolicy
HTTP_METHODS = ("*", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_DISPLAY_NAME = 200  # characters of a feature's display name
MAX_BIGINT = 2**63 - 1  # usage_limit is a bigint
UNLIMITED = "unlimited"

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# "7 days", "36 hours", "10m", "12h", "7d": the forms PostgreSQL's interval input reads
# the same way (the SQL casts these strings to interval). No months: their length varies.
DURATION = re.compile(
    r"([1-9][0-9]{0,5}) ?(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|w)"
)
DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(value: str) -> int | None:
    """Seconds of a valid duration ("30 seconds", "7 days"), or None."""
    found = DURATION.fullmatch(value.strip())
    return int(found[1]) * DURATION_SECONDS[found[2][0]] if found else None


def duration_text(seconds: int) -> str:
    """Seconds in the largest whole unit, as skene.toml would say it: "30 days"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


# --------------------------------------------------------------------------------
# What a valid file becomes
# --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanSpec:
    name: str
    paid: bool = False
    stripe_prices: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    period: str
    limits: dict[str, int | None]  # plan -> limit; None: unlimited, 0: not in plan
    soft: bool = False
    meter: str | None = None
    match: tuple[dict, ...] = ()
    display_name: str | None = None  # `name = "API calls"`: what people are shown
    # counted from an app table: {"table": ..., "customer": ...}; usage = live rows
    count: dict | None = None


# [sources.<kind>]: the app tables skene reads through triggers. A counted feature is a
# source too, named "count:<feature>".
SOURCE_KINDS = ("customers", "subscriptions", "events", "activity")
DEFAULT_ACTIVE_STATUSES = ("active", "trialing")


@dataclass(frozen=True)
class SourceSpec:
    name: str  # the kind, or "count:<feature>"
    kind: str  # customers, subscriptions, events, activity or count
    table: str  # as the file names it; apply resolves it with its search_path
    config: dict  # the source's table in the file: columns and SQL expressions
    feature: str | None = None  # count sources only


@dataclass(frozen=True)
class LoopSpec:
    name: str
    type: str
    feature: str | None
    config: dict  # the loop's table minus name, type, feature and enabled
    enabled: bool = True


# [housekeeping] keep_finished: how long finished jobs, processed billing events and
# loop runs are kept. At least a day: today's dedupe keys (the daily reconcile's) must
# outlive the day.
KEEP_FINISHED_DEFAULT = 30 * 86400
KEEP_FINISHED_MINIMUM = 86400


@dataclass(frozen=True)
class HousekeepingSpec:
    keep_finished: int = KEEP_FINISHED_DEFAULT  # seconds


@dataclass(frozen=True)
class SkeneConfig:
    default_plan: str
    plans: tuple[PlanSpec, ...]
    features: tuple[FeatureSpec, ...]
    loops: tuple[LoopSpec, ...]
    source: Path
    housekeeping: HousekeepingSpec = HousekeepingSpec()
    upgrade_url: str | None = None  # where a blocked customer upgrades (the 402's upgrade_url)
    sources: tuple[SourceSpec, ...] = ()


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class ConfigError(Exception):
    """The file has mistakes; `.problems` lists every one."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def dotted(path: FieldPath) -> str:
    """`("loops", 1, "recovery")` -> `loops[1].recovery`; odd keys are quoted."""
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += ("." if out else "") + (key if BARE_KEY.fullmatch(key) else json.dumps(key))
    return out


def describe(value: Any) -> str:
    """A value as the user wrote it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times


def names_of(names: Any) -> str:
    return ", ".join(names) if names else "none"


NAME_RULES = {
    "plan": "1-63 letters, digits, _ . - starting with a letter or digit",
    "feature": "1-63 letters, digits, _ . : - starting with a letter or digit",
    "loop": "1-63 letters, digits, _ . - starting with a letter or digit",
}


def is_period(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    found = re.fullmatch(r"([1-9][0-9]{0,2})d", value)
    return int(found[1]) <= 366 if found else value in PERIODS
