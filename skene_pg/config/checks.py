"""The checks every part of skene.toml is made of: shapes, types, names, durations.
Each collects a Problem (file, line, dotted field, message) and returns the checked
value, or None, so one run reports every mistake."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from skene_pg.config.locate import Locator
from skene_pg.config.model import (
    DURATION,
    DURATION_SECONDS,
    NAME_RULES,
    FieldPath,
    Problem,
    describe,
    dotted,
    names_of,
)


class ShapeChecks:
    """Collects every problem; each check returns the checked value, or None."""

    def __init__(self, file: Path, locator: Locator) -> None:
        self.file = file
        self.locator = locator
        self.problems: list[Problem] = []

    def report(self, path: FieldPath, message: str) -> None:
        self.problems.append(Problem(self.file, self.locator.locate(path), dotted(path), message))

    # -- shapes and types --
    def table(
        self,
        value: Any,
        path: FieldPath,
        required: tuple[str, ...] = (),
        optional: tuple[str, ...] = (),
        what: str = "a table",
    ) -> dict | None:
        if not isinstance(value, dict):
            self.report(path, f"must be {what}, got {describe(value)}")
            return None
        allowed = (*required, *optional)
        suggested = set()
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                suggested.update(close)
                self.report((*path, key), f"unknown key; {hint}allowed: {names_of(allowed)}")
        for key in required:
            if key not in value and key not in suggested:  # a typo is reported once
                self.report((*path, key), "is required")
        return value

    def mapping(self, value: Any, path: FieldPath, what: str) -> dict | None:
        """A table whose keys are the user's names (plans, features, limits)."""
        if not isinstance(value, dict):
            self.report(path, f"must be {what}, got {describe(value)}")
            return None
        return value

    def string(self, value: Any, path: FieldPath) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.report(path, f"must be a non-empty string, got {describe(value)}")
            return None
        return value

    def boolean(self, value: Any, path: FieldPath) -> bool | None:
        if not isinstance(value, bool):
            self.report(path, f"must be true or false, got {describe(value)}")
            return None
        return value

    def whole(self, value: Any, path: FieldPath, minimum: int) -> int | None:
        # bool is an int in Python; `retries = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.report(path, f"must be a whole number >= {minimum}, got {describe(value)}")
            return None
        return value

    def choice(self, value: Any, path: FieldPath, choices: tuple[str, ...]) -> str | None:
        if not isinstance(value, str) or value not in choices:
            self.report(path, f"{describe(value)} is not one of {', '.join(choices)}")
            return None
        return value

    def name(self, value: str, path: FieldPath, pattern: re.Pattern[str], what: str) -> None:
        if not pattern.fullmatch(value):
            self.report(path, f"{describe(value)} is not a valid {what} name: {NAME_RULES[what]}")

    def duration(self, value: Any, path: FieldPath) -> int | None:
        """Seconds of "7 days", "36 hours", ... (a PostgreSQL interval as well)."""
        found = DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        if not found:
            self.report(
                path,
                f'{describe(value)} is not a duration; use e.g. "7 days" or '
                f'"36 hours" or "10m" (seconds, minutes, hours, days or weeks)',
            )
            return None
        return int(found[1]) * DURATION_SECONDS[found[2][0]]
