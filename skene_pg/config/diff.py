"""The diff between the catalogue in the database and a validated skene.toml: a list
of steps, each a human-readable Change plus the statements that make it, in an order
the foreign keys and the one-default index accept."""

from __future__ import annotations

import psycopg

from skene_pg.config.diff_catalogue import (
    default_plan_steps,
    feature_steps,
    limit_steps,
    plan_steps,
    price_steps,
)
from skene_pg.config.diff_loops import housekeeping_steps, loop_deletions, loop_steps, setting_steps
from skene_pg.config.model import SkeneConfig
from skene_pg.config.source_checks import query_problems
from skene_pg.config.source_steps import (
    current_sources,
    gone_sources,
    removal,
    source_steps,
    wanted_sources,
)
from skene_pg.config.steps import Catalogue, Change, Step, delete_step
from skene_pg.config.timezones import timezone_problems


class ApplyRefused(Exception):
    """Applying would delete something the file does not allow deleting."""


def _read(conn: psycopg.Connection) -> Catalogue:
    plans, default = {}, None
    for plan, paid, is_default in conn.execute("SELECT plan, paid, is_default FROM skene.plans"):
        plans[plan] = paid
        default = plan if is_default else default
    prices: dict[str, str] = dict(
        conn.execute("SELECT price_id, plan FROM skene.plan_prices").fetchall()
    )
    features = {
        row[0]: dict(zip(("period", "soft", "meter", "match", "name"), row[1:], strict=True))
        for row in conn.execute(
            "SELECT feature, period, soft, meter, match, name FROM skene.features"
        )
    }
    limits = {
        (feature, plan): limit
        for feature, plan, limit in conn.execute(
            "SELECT feature, plan, usage_limit FROM skene.feature_limits"
        )
    }
    loops = {
        row[0]: dict(zip(("type", "feature", "config", "enabled"), row[1:], strict=True))
        for row in conn.execute("SELECT name, type, feature, config, enabled FROM skene.loops")
    }
    row = conn.execute(
        "SELECT extract(epoch FROM keep_finished)::bigint FROM skene.housekeeping_settings"
    ).fetchone()
    keep_finished = int(row[0]) if row else None
    settings: dict[str, str] = dict(
        conn.execute("SELECT name, value FROM skene.settings").fetchall()
    )
    return Catalogue(plans, prices, default, features, limits, loops, keep_finished, settings)


def catalogue_steps(conn: psycopg.Connection, config: SkeneConfig, prune: bool) -> list[Step]:
    """Every change, in an order the foreign keys and the one-default index accept."""
    now = _read(conn)
    gone_plans = sorted(set(now.plans) - {p.name for p in config.plans})
    gone_features = sorted(set(now.features) - {f.name for f in config.features})
    sources_now = current_sources(conn)
    gone = gone_sources(sources_now, config)
    _refuse_deletions(conn, gone_plans, gone_features, prune, gone)
    _refuse_unsafe_segments(conn, config)
    _refuse_unknown_timezones(conn, config)
    _refuse_bad_queries(conn, config)
    wanted = wanted_sources(conn, config)
    return [
        # first: a counted feature's trigger goes before its feature
        *[
            (Change("delete", "source", name, "its trigger is dropped"), [removal(name)])
            for name in gone
        ],
        *loop_deletions(now, config),  # loops reference features
        *plan_steps(now, config),
        *price_steps(now, config, set(gone_plans)),
        *default_plan_steps(now, config),
        *feature_steps(now, config),
        *limit_steps(now, config, set(gone_plans)),
        *loop_steps(now, config),
        # after plans, prices and features: a backfill sets plans and counts usage
        *[
            (Change(action, "source", name, detail), statements)  # type: ignore[arg-type]
            for action, name, detail, statements in source_steps(sources_now, wanted)
        ],
        *housekeeping_steps(now, config),
        *setting_steps(now, config),
        *[
            delete_step(
                "feature",
                name,
                "its limits, overrides and usage go with it",
                "DELETE FROM skene.features WHERE feature = %s",
            )
            for name in gone_features
        ],
        *[
            delete_step(
                "plan", name, "its limits go with it", "DELETE FROM skene.plans WHERE plan = %s"
            )
            for name in gone_plans
        ],
    ]


def _refuse_deletions(
    conn: psycopg.Connection,
    plans: list[str],
    features: list[str],
    prune: bool,
    sources: list[str] | None = None,
) -> None:
    reasons = []
    if sources and not prune:
        reasons.append(
            f"the file no longer lists {'source' if len(sources) == 1 else 'sources'} "
            f"{', '.join(sources)}; pass --prune to remove their triggers"
        )
    if (plans or features) and not prune:
        named = [f"{'plan' if len(plans) == 1 else 'plans'} {', '.join(plans)}"] if plans else []
        if features:
            named.append(f"{'feature' if len(features) == 1 else 'features'} {', '.join(features)}")
        reasons.append(
            f"the file no longer lists {' and '.join(named)}; deleting them also "
            f"deletes their limits and usage: pass --prune to delete them"
        )
    if plans:
        for plan, customers in conn.execute(
            "SELECT plan, count(*) FROM skene.customers WHERE plan = ANY(%s) "
            "GROUP BY plan ORDER BY plan",
            (plans,),
        ):
            reasons.append(
                f"plan {plan} still has {customers} "
                f"customer{'s' if customers != 1 else ''}: move them to another plan "
                f"with skene.set_plan(customer_id, plan) first"
            )
    if reasons:
        raise ApplyRefused("\n".join([*reasons, "nothing applied"]))


def _refuse_unsafe_segments(conn: psycopg.Connection, config: SkeneConfig) -> None:
    """A segment runs with the owner's rights under the search_path of the session
    that applies it: refuse a path with schemas other roles control (an operator
    planted there would run as the owner), as skene.run_loop would at run time."""
    segments = [
        (index, loop.name)
        for index, loop in enumerate(config.loops)
        if loop.type == "retention" and (loop.config.get("segment") or loop.config.get("query"))
    ]
    if not segments:
        return
    path_row = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()
    path = path_row[0] if path_row else ""
    risks = conn.execute(
        "SELECT schema_name, risk FROM skene.search_path_risks(%s)", (path,)
    ).fetchall()
    if not risks:
        return
    named = "; ".join(f"{schema} ({risk})" for schema, risk in risks)
    lines = [
        f"{config.source}: loops[{index}].segment: loop {name} would run its segment with "
        f"the owner's rights under search_path {path}, where other roles control: {named}"
        for index, name in segments
    ]
    lines.append(
        "hint: apply from a session whose search_path leaves those schemas out, e.g. "
        "PGOPTIONS='-c search_path=pg_catalog' skene-pg apply ..., and qualify the app's "
        "tables in the segment; or REVOKE CREATE ON SCHEMA ... FROM PUBLIC and the roles named"
    )
    raise ApplyRefused("\n".join([*lines, "nothing applied"]))


def _refuse_bad_queries(conn: psycopg.Connection, config: SkeneConfig) -> None:
    """A loop's query is planned now, not found broken at its first run."""
    problems = query_problems(conn, config)
    if problems:
        raise ApplyRefused("\n".join([*(str(p) for p in problems), "nothing applied"]))


def _refuse_unknown_timezones(conn: psycopg.Connection, config: SkeneConfig) -> None:
    problems = timezone_problems(conn, config)
    if problems:
        raise ApplyRefused("\n".join([*(str(p) for p in problems), "nothing applied"]))


__all__ = ["ApplyRefused", "Change", "catalogue_steps"]
