"""Gates: which requests count against which feature, as `skene.gates()` returns them,
and the brief cache the framework middleware keeps of them.

A feature's `match` patterns ({ method, path } in skene.toml) say which requests it
gates. `path` is a glob on the URL path: `*` matches within one segment (no `/`),
`**` matches across segments, anything else matches itself; `method` is a method
name or `*` (the default) for any."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


def path_regex(glob: str) -> re.Pattern[str]:
    """The regex of a path glob: `**` any run of characters, `*` any within a segment."""
    parts = re.split(r"(\*\*|\*)", glob)
    pattern = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts
    )
    return re.compile(pattern)


@dataclass(frozen=True)
class MatchRule:
    method: str  # upper case, or "*"
    path: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def of(cls, pattern: dict[str, Any]) -> MatchRule:
        method = str(pattern.get("method") or "*").upper()
        return cls(method, pattern["path"], path_regex(pattern["path"]))

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method.upper())) and self.regex.fullmatch(path) is not None


@dataclass(frozen=True)
class Gate:
    """One feature as the middleware sees it (a row of skene.gates())."""

    feature: str
    name: str  # display name: `[features.X] name`, else the feature's own name
    match: tuple[MatchRule, ...]
    message: str | None  # the freemium loop's message, the 402's title
    upgrade_url: str | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Gate:
        feature, name, match, message, upgrade_url = row
        rules = tuple(MatchRule.of(p) for p in (match or []))
        return cls(feature, name or feature, rules, message, upgrade_url)

    def matches(self, method: str, path: str) -> bool:
        return any(rule.matches(method, path) for rule in self.match)


@dataclass(frozen=True)
class GateTable:
    """The gates of one read; features in name order, so every request is gated in the
    same order (and two features never wait on each other's counters crosswise)."""

    gates: tuple[Gate, ...]

    def matching(self, method: str, path: str) -> list[Gate]:
        return [gate for gate in self.gates if gate.matches(method, path)]

    def get(self, feature: str) -> Gate | None:
        return next((gate for gate in self.gates if gate.feature == feature), None)


class GateCache:
    """skene.gates() read at most every `ttl` seconds; on a failed read the last good
    table is kept (a gate keeps gating through a blip). Sync and async callers share
    it: they differ only in how they read."""

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._table: GateTable | None = None
        self._read_at = 0.0

    def fresh(self) -> GateTable | None:
        if self._table is not None and time.monotonic() - self._read_at < self.ttl:
            return self._table
        return None

    def stale(self) -> GateTable | None:
        return self._table

    def store(self, gates: Iterable[Gate]) -> GateTable:
        self._table = GateTable(tuple(sorted(gates, key=lambda g: g.feature)))
        self._read_at = time.monotonic()
        return self._table

    def clear(self) -> None:
        self._table = None
