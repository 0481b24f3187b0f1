"""The diff's part for loops and settings: loops deleted, created and changed, the
[housekeeping] settings row, and top-level settings such as upgrade_url."""

from __future__ import annotations

from psycopg.types.json import Jsonb

from skene_pg.config.model import SkeneConfig, duration_text
from skene_pg.config.steps import (
    Action,
    Catalogue,
    Change,
    Step,
    delete_step,
    toml_text,
)


def loop_deletions(now: Catalogue, config: SkeneConfig) -> list[Step]:
    kept = {loop.name for loop in config.loops}
    return [
        delete_step(
            "loop",
            name,
            f"{now.loops[name]['type']}; no longer in the file",
            "DELETE FROM skene.loops WHERE name = %s",
        )
        for name in sorted(set(now.loops) - kept)
    ]


def loop_steps(now: Catalogue, config: SkeneConfig) -> list[Step]:
    steps: list[Step] = []
    for loop in config.loops:
        wanted = {
            "type": loop.type,
            "feature": loop.feature,
            "config": loop.config,
            "enabled": loop.enabled,
        }
        params = (loop.type, loop.feature, Jsonb(loop.config), loop.enabled, loop.name)
        current = now.loops.get(loop.name)
        if current is None:
            detail = loop.type + (f" on {loop.feature}" if loop.feature else "")
            detail += "" if loop.enabled else ", disabled"
            steps.append(
                (
                    Change("create", "loop", loop.name, detail),
                    [
                        (
                            "INSERT INTO skene.loops (type, feature, config, enabled, name) "
                            "VALUES (%s, %s, %s, %s, %s)",
                            params,
                        )
                    ],
                )
            )
            continue
        details = [
            f"{key}: {toml_text(current[key])} -> {toml_text(wanted[key])}"
            for key in ("type", "feature", "enabled")
            if current[key] != wanted[key]
        ]
        config_keys = sorted(
            key
            for key in {*current["config"], *loop.config}
            if current["config"].get(key) != loop.config.get(key)
        )
        if config_keys:
            details.append(f"changed {', '.join(config_keys)}")
        if details:
            steps.append(
                (
                    Change("update", "loop", loop.name, "; ".join(details)),
                    [
                        (
                            "UPDATE skene.loops SET type = %s, feature = %s, config = %s, "
                            "enabled = %s, updated_at = pg_catalog.now(), "
                            "segment_search_path = pg_catalog.current_setting('search_path') "
                            "WHERE name = %s",
                            params,
                        )
                    ],
                )
            )
    return steps


def housekeeping_steps(now: Catalogue, config: SkeneConfig) -> list[Step]:
    """[housekeeping] into the one settings row; leaving it out means the defaults."""
    wanted = config.housekeeping.keep_finished
    if now.keep_finished == wanted:
        return []
    detail = (
        duration_text(wanted)
        if now.keep_finished is None
        else f"{duration_text(now.keep_finished)} -> {duration_text(wanted)}"
    )
    return [
        (
            Change(
                "create" if now.keep_finished is None else "update",
                "housekeeping",
                "keep_finished",
                detail,
            ),
            [
                (
                    # whole days stay days ("30 days", not "720:00:00") for whoever reads it
                    "INSERT INTO skene.housekeeping_settings AS s (keep_finished) "
                    "VALUES (pg_catalog.make_interval(days => %s, secs => %s)) "
                    "ON CONFLICT ON CONSTRAINT housekeeping_settings_pkey DO UPDATE "
                    "SET keep_finished = excluded.keep_finished, updated_at = pg_catalog.now()",
                    (wanted // 86400, wanted % 86400),
                )
            ],
        )
    ]


def setting_steps(now: Catalogue, config: SkeneConfig) -> list[Step]:
    steps: list[Step] = []
    wanted = {"upgrade_url": config.upgrade_url}
    for name, value in wanted.items():
        current = now.settings.get(name)
        if value == current:
            continue
        if value is None:
            steps.append(
                delete_step(
                    "setting", name, f"was {current}", "DELETE FROM skene.settings WHERE name = %s"
                )
            )
            continue
        action: Action = "create" if current is None else "update"
        steps.append(
            (
                Change(
                    action, "setting", name, value if current is None else f"{current} -> {value}"
                ),
                [
                    (
                        "INSERT INTO skene.settings AS s (name, value) VALUES (%s, %s) "
                        "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                        "updated_at = pg_catalog.now()",
                        (name, value),
                    )
                ],
            )
        )
    return steps
