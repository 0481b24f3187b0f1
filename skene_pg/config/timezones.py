"""Time zones a skene.toml names, checked against the database at apply time.

A loop's quiet hours are computed by PostgreSQL, so the zones that count are the ones
it knows (pg_timezone_names), which may differ from those of the machine that runs
`skene-pg apply`. Reading the file stays database-free (validate.py); this runs in
apply's transaction, before anything is written."""

from __future__ import annotations

import difflib
from pathlib import Path

import psycopg

from skene_pg.config.locate import Locator
from skene_pg.config.model import FieldPath, Problem, SkeneConfig, describe, dotted


def default_timezones(config: SkeneConfig) -> list[tuple[FieldPath, str]]:
    """(field, zone) of every loop's quiet_hours.default_timezone."""
    found: list[tuple[FieldPath, str]] = []
    # apply only sees a valid file, so loops are in the file's order
    for index, loop in enumerate(config.loops):
        quiet = loop.config.get("quiet_hours")
        if isinstance(quiet, dict) and isinstance(quiet.get("default_timezone"), str):
            found.append(
                (("loops", index, "quiet_hours", "default_timezone"), quiet["default_timezone"])
            )
    return found


def timezone_problems(conn: psycopg.Connection, config: SkeneConfig) -> list[Problem]:
    """A Problem (with the file's line) for each zone PostgreSQL does not know."""
    wanted = default_timezones(config)
    if not wanted:
        return []
    known = [row[0] for row in conn.execute("SELECT name FROM pg_catalog.pg_timezone_names")]
    unknown = [(path, zone) for path, zone in wanted if zone not in set(known)]
    if not unknown:
        return []
    locator = _locator(config.source)
    problems = []
    for path, zone in unknown:
        close = difflib.get_close_matches(zone, known, n=1)
        hint = f"did you mean {describe(close[0])}? " if close else ""
        problems.append(
            Problem(
                config.source,
                locator.locate(path) if locator else None,
                dotted(path),
                f"{describe(zone)} is not a time zone PostgreSQL knows; {hint}"
                f'use a name from pg_timezone_names, such as "America/New_York"',
            )
        )
    return problems


def _locator(source: Path) -> Locator | None:
    try:
        return Locator(Path(source).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None  # the message still names the field
