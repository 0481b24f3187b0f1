"""CLI output: plain-text tables for people (the default) and JSON for machines
(`--json`: snake_case keys, ISO 8601 times)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    body = [[cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(line.rstrip() for line in out)


def to_json(value: Any) -> str:
    """JSON for --json output: times and dates in ISO 8601, durations in seconds,
    decimals as numbers, anything else (UUIDs) as its text."""

    def default(obj: Any) -> Any:
        if isinstance(obj, date | datetime):
            return obj.isoformat()
        if isinstance(obj, timedelta):
            return obj.total_seconds()
        if isinstance(obj, Decimal):
            return int(obj) if obj == obj.to_integral_value() else float(obj)
        return str(obj)

    return json.dumps(value, default=default)


def advice_lines(advice: Any, label: str) -> list[str]:
    """A warning or finding with its fix (an Advice: message, fix lines, database), as
    `label: message` and the fix indented below, ready to copy."""
    lines = [f"{label}: {advice.message}"]
    if advice.fix:
        where = f", in database {advice.database}" if advice.database else ""
        lines.append(f"  fix{where}:")
        lines += [f"    {line}" for line in advice.fix]
    return lines


def advice_json(advice: Any) -> dict[str, Any]:
    return {"message": advice.message, "fix": list(advice.fix), "database": advice.database}
