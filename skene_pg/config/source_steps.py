"""The sources part of apply's diff: install the trigger of each new or changed source
on its app table and backfill it; remove the sources the file dropped (with --prune).

A source is stored in skene.sources (its table by OID, and the file's columns and
expressions); the SQL functions install_source, backfill_source and drop_source do the
rest, in apply's transaction."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from skene_pg.config.model import SkeneConfig
from skene_pg.config.source_checks import ResolvedSource, resolve_sources

Statement = tuple[str, tuple[Any, ...]]


def current_sources(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    return {
        row[0]: {"kind": row[1], "oid": int(row[2]), "feature": row[3], "config": row[4]}
        for row in conn.execute(
            "SELECT name, kind, relation::oid::bigint, feature, config FROM skene.sources"
        )
    }


def gone_sources(now: dict[str, dict[str, Any]], config: SkeneConfig) -> list[str]:
    return sorted(set(now) - {s.name for s in config.sources})


def wanted_sources(conn: psycopg.Connection, config: SkeneConfig) -> dict[str, ResolvedSource]:
    """The file's sources, resolved against the database; raises ApplyRefused with
    every problem (file, line, field) when one does not work."""
    from skene_pg.config.diff import ApplyRefused

    resolved, problems = resolve_sources(conn, config)
    if problems:
        raise ApplyRefused("\n".join([*(str(p) for p in problems), "nothing applied"]))
    return resolved


def _describe(source: ResolvedSource) -> str:
    what = {
        "customers": "customers from",
        "subscriptions": "plans from",
        "events": "activity from the rows of",
        "activity": f"activity from {source.config.get('column')} of",
        "count": f"{source.spec.feature} counted from",
    }[source.spec.kind]
    return f"{what} {source.qualified}, backfilled"


def source_steps(
    now: dict[str, dict[str, Any]], wanted: dict[str, ResolvedSource]
) -> list[tuple[str, str, str, list[Statement]]]:
    """(action, name, detail, statements) for each source to create or change."""
    steps = []
    for name, source in wanted.items():
        spec = source.spec
        insert: list[Statement] = [
            (
                "INSERT INTO skene.sources (name, kind, relation, feature, config) "
                "VALUES (%s, %s, %s::oid::regclass, %s, %s)",
                (name, spec.kind, source.oid, spec.feature, Jsonb(source.config)),
            ),
            ("SELECT skene.backfill_source(%s)", (name,)),
        ]
        current = now.get(name)
        if current is None:
            steps.append(("create", name, _describe(source), insert))
            continue
        if current["oid"] == source.oid and current["config"] == source.config:
            continue
        changed = [
            key
            for key in sorted({*current["config"], *source.config})
            if current["config"].get(key) != source.config.get(key)
        ]
        detail = f"changed {', '.join(changed) or 'table'}; " + _describe(source)
        steps.append(("update", name, detail, [("SELECT skene.drop_source(%s)", (name,)), *insert]))
    return steps


def removal(name: str) -> Statement:
    return ("SELECT skene.drop_source(%s)", (name,))
