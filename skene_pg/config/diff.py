"""The diff between the catalogue in the database and a validated skene.toml: a list
of steps, each a human-readable Change plus the statements that make it, in an order
the foreign keys and the one-default index accept."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from skene_pg.config.model import SkeneConfig, duration_text
from skene_pg.config.source_checks import query_problems
from skene_pg.config.source_steps import (
    current_sources,
    gone_sources,
    removal,
    source_steps,
    wanted_sources,
)
from skene_pg.config.timezones import timezone_problems

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


class ApplyRefused(Exception):
    """Applying would delete something the file does not allow deleting."""


Step = tuple[Change, list[Statement]]


@dataclass
class _Catalogue:
    """The rows `apply` owns, as they are now."""

    plans: dict[str, bool]  # plan -> paid
    prices: dict[str, str]  # biller price id -> plan
    default_plan: str | None
    features: dict[str, dict[str, Any]]  # feature -> period, soft, meter, match
    limits: dict[tuple[str, str], int | None]  # (feature, plan) -> limit
    loops: dict[str, dict[str, Any]]  # name -> type, feature, config, enabled
    keep_finished: int | None  # seconds; None: no settings row


def _read(conn: psycopg.Connection) -> _Catalogue:
    plans, default = {}, None
    for plan, paid, is_default in conn.execute("SELECT plan, paid, is_default FROM skene.plans"):
        plans[plan] = paid
        default = plan if is_default else default
    prices: dict[str, str] = dict(
        conn.execute("SELECT price_id, plan FROM skene.plan_prices").fetchall()
    )
    features = {
        row[0]: dict(zip(("period", "soft", "meter", "match"), row[1:], strict=True))
        for row in conn.execute("SELECT feature, period, soft, meter, match FROM skene.features")
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
    return _Catalogue(plans, prices, default, features, limits, loops, keep_finished)


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
        *_loop_deletions(now, config),  # loops reference features
        *_plan_steps(now, config),
        *_price_steps(now, config, set(gone_plans)),
        *_default_plan_steps(now, config),
        *_feature_steps(now, config),
        *_limit_steps(now, config, set(gone_plans)),
        *_loop_steps(now, config),
        # after plans, prices and features: a backfill sets plans and counts usage
        *[
            (Change(action, "source", name, detail), statements)  # type: ignore[arg-type]
            for action, name, detail, statements in source_steps(sources_now, wanted)
        ],
        *_housekeeping_steps(now, config),
        *[
            _delete(
                "feature",
                name,
                "its limits, overrides and usage go with it",
                "DELETE FROM skene.features WHERE feature = %s",
            )
            for name in gone_features
        ],
        *[
            _delete(
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


def _delete(kind: Kind, name: str, detail: str, query: str) -> Step:
    return Change("delete", kind, name, detail), [(query, (name,))]


def _plan_steps(now: _Catalogue, config: SkeneConfig) -> list[Step]:
    steps: list[Step] = []
    for plan in config.plans:
        if plan.name not in now.plans:
            steps.append(
                (
                    Change("create", "plan", plan.name, "paid" if plan.paid else ""),
                    [
                        (
                            "INSERT INTO skene.plans (plan, paid) VALUES (%s, %s)",
                            (plan.name, plan.paid),
                        )
                    ],
                )
            )
        elif now.plans[plan.name] != plan.paid:
            steps.append(
                (
                    Change(
                        "update",
                        "plan",
                        plan.name,
                        f"paid: {_toml(now.plans[plan.name])} -> {_toml(plan.paid)}",
                    ),
                    [
                        (
                            "UPDATE skene.plans SET paid = %s, updated_at = pg_catalog.now() "
                            "WHERE plan = %s",
                            (plan.paid, plan.name),
                        )
                    ],
                )
            )
    return steps


def _price_steps(now: _Catalogue, config: SkeneConfig, gone_plans: set[str]) -> list[Step]:
    steps: list[Step] = []
    wanted = {price: plan.name for plan in config.plans for price in plan.stripe_prices}
    for price, plan in sorted(now.prices.items()):
        # Prices of deleted plans go with them (ON DELETE CASCADE).
        if price not in wanted and plan not in gone_plans:
            steps.append(
                _delete(
                    "price",
                    price,
                    f"was {plan}",
                    "DELETE FROM skene.plan_prices WHERE price_id = %s",
                )
            )
    for price, plan in sorted(wanted.items()):
        if price not in now.prices:
            steps.append(
                (
                    Change("create", "price", price, f"puts customers on {plan}"),
                    [
                        (
                            "INSERT INTO skene.plan_prices (price_id, plan) VALUES (%s, %s)",
                            (price, plan),
                        )
                    ],
                )
            )
        elif now.prices[price] != plan:
            steps.append(
                (
                    Change("update", "price", price, f"{now.prices[price]} -> {plan}"),
                    [("UPDATE skene.plan_prices SET plan = %s WHERE price_id = %s", (plan, price))],
                )
            )
    return steps


def _default_plan_steps(now: _Catalogue, config: SkeneConfig) -> list[Step]:
    new, old = config.default_plan, now.default_plan
    if new == old:
        return []
    # The partial unique index allows one default at a time: clear the old one first.
    statements: list[Statement] = [
        (
            "UPDATE skene.plans SET is_default = false, updated_at = pg_catalog.now() "
            "WHERE is_default",
            (),
        ),
        (
            "UPDATE skene.plans SET is_default = true, updated_at = pg_catalog.now() "
            "WHERE plan = %s",
            (new,),
        ),
    ]
    if old is None:
        return [(Change("create", "default_plan", new, "new customers start on it"), statements)]
    return [(Change("update", "default_plan", new, f"was {old}"), statements)]


def _feature_steps(now: _Catalogue, config: SkeneConfig) -> list[Step]:
    steps: list[Step] = []
    for feature in config.features:
        wanted = {
            "period": feature.period,
            "soft": feature.soft,
            "meter": feature.meter,
            "match": list(feature.match),
        }
        params = (feature.period, feature.soft, feature.meter, Jsonb(wanted["match"]), feature.name)
        current = now.features.get(feature.name)
        if current is None:
            described = [
                f"period {feature.period}",
                *(["soft"] if feature.soft else []),
                *([f"meter {feature.meter}"] if feature.meter else []),
                *([f"{len(feature.match)} match patterns"] if feature.match else []),
            ]
            steps.append(
                (
                    Change("create", "feature", feature.name, ", ".join(described)),
                    [
                        (
                            "INSERT INTO skene.features (period, soft, meter, match, feature) "
                            "VALUES (%s, %s, %s, %s, %s)",
                            params,
                        )
                    ],
                )
            )
            continue
        changed = [key for key in wanted if wanted[key] != current[key]]
        if not changed:
            continue
        statements: list[Statement] = []
        details = []
        for key in changed:
            if key == "match":
                details.append("match patterns changed")
            else:
                details.append(f"{key}: {_toml(current[key])} -> {_toml(wanted[key])}")
        if "period" in changed:
            # Counts kept under the old period would mean something else under the new
            # one (and the Nd ring has the wrong size): start the feature's usage afresh.
            details[changed.index("period")] += " (usage counters reset)"
            statements.append(("DELETE FROM skene.usage WHERE feature = %s", (feature.name,)))
        statements.append(
            (
                "UPDATE skene.features SET period = %s, soft = %s, meter = %s, "
                "match = %s, updated_at = pg_catalog.now() WHERE feature = %s",
                params,
            )
        )
        steps.append((Change("update", "feature", feature.name, "; ".join(details)), statements))
    return steps


def _limit_steps(now: _Catalogue, config: SkeneConfig, gone_plans: set[str]) -> list[Step]:
    steps: list[Step] = []
    wanted = {(f.name, plan): limit for f in config.features for plan, limit in f.limits.items()}
    kept_features = {f.name for f in config.features}
    for (feature, plan), limit in sorted(now.limits.items()):
        # Limits of deleted plans and features go with them (ON DELETE CASCADE).
        if (feature, plan) not in wanted and feature in kept_features and plan not in gone_plans:
            steps.append(
                (
                    Change(
                        "delete",
                        "limit",
                        f"{feature}/{plan}",
                        f"was {_limit(limit)}; {plan} no longer includes {feature}",
                    ),
                    [
                        (
                            "DELETE FROM skene.feature_limits WHERE feature = %s AND plan = %s",
                            (feature, plan),
                        )
                    ],
                )
            )
    for (feature, plan), limit in wanted.items():
        key = f"{feature}/{plan}"
        if (feature, plan) not in now.limits:
            steps.append(
                (
                    Change("create", "limit", key, _limit(limit)),
                    [
                        (
                            "INSERT INTO skene.feature_limits (usage_limit, feature, plan) "
                            "VALUES (%s, %s, %s)",
                            (limit, feature, plan),
                        )
                    ],
                )
            )
        elif now.limits[(feature, plan)] != limit:
            steps.append(
                (
                    Change(
                        "update",
                        "limit",
                        key,
                        f"{_limit(now.limits[(feature, plan)])} -> {_limit(limit)}",
                    ),
                    [
                        (
                            "UPDATE skene.feature_limits SET usage_limit = %s "
                            "WHERE feature = %s AND plan = %s",
                            (limit, feature, plan),
                        )
                    ],
                )
            )
    return steps


def _loop_deletions(now: _Catalogue, config: SkeneConfig) -> list[Step]:
    kept = {loop.name for loop in config.loops}
    return [
        _delete(
            "loop",
            name,
            f"{now.loops[name]['type']}; no longer in the file",
            "DELETE FROM skene.loops WHERE name = %s",
        )
        for name in sorted(set(now.loops) - kept)
    ]


def _loop_steps(now: _Catalogue, config: SkeneConfig) -> list[Step]:
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
            f"{key}: {_toml(current[key])} -> {_toml(wanted[key])}"
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


def _housekeeping_steps(now: _Catalogue, config: SkeneConfig) -> list[Step]:
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


def _limit(limit: int | None) -> str:
    if limit is None:
        return "unlimited"
    return "0 (not in plan)" if limit == 0 else str(limit)


def _toml(value: Any) -> str:
    """A value as it would be written in skene.toml, for details."""
    if value is None:
        return "none"
    return json.dumps(value) if isinstance(value, bool) else str(value)
