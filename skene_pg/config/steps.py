"""What a diff is made of: the catalogue as it is now, a Change (what a person reads
in `apply`'s output) and the statements that make it, and the small helpers every
part of the diff shares."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["create", "update", "delete"]
Kind = Literal[
    "plan",
    "price",
    "feature",
    "limit",
    "loop",
    "default_plan",
    "schedule",
    "housekeeping",
    "setting",
    "source",
]
Statement = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Change:
    action: Action
    kind: Kind
    name: str
    detail: str = ""

    def __str__(self) -> str:
        head = f"{self.action} {self.kind} {self.name}"
        return f"{head}: {self.detail}" if self.detail else head


Step = tuple[Change, list[Statement]]


@dataclass
class Catalogue:
    """The rows `apply` owns, as they are now."""

    plans: dict[str, bool]  # plan -> paid
    prices: dict[str, str]  # biller price id -> plan
    default_plan: str | None
    features: dict[str, dict[str, Any]]  # feature -> period, soft, meter, match, name
    limits: dict[tuple[str, str], int | None]  # (feature, plan) -> limit
    loops: dict[str, dict[str, Any]]  # name -> type, feature, config, enabled
    keep_finished: int | None  # seconds; None: no settings row
    settings: dict[str, str]  # top-level settings: upgrade_url


def delete_step(kind: Kind, name: str, detail: str, query: str) -> Step:
    return Change("delete", kind, name, detail), [(query, (name,))]


def quoted(value: Any) -> str:
    return "none" if value is None else json.dumps(value)


def limit_text(limit: int | None) -> str:
    if limit is None:
        return "unlimited"
    return "0 (not in plan)" if limit == 0 else str(limit)


def toml_text(value: Any) -> str:
    """A value as it would be written in skene.toml, for details."""
    if value is None:
        return "none"
    return json.dumps(value) if isinstance(value, bool) else str(value)
