"""The proposed skene.toml: plans, features (counted tables, API routes), sources and a
freemium and a retention loop, each guess with a comment saying why."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from skene_pg.proposal.catalogue import ident, read_tables
from skene_pg.proposal.recognise import Plan, Recognised, recognise
from skene_pg.proposal.routes import Route, find_routes

FREE_COUNT_LIMIT = 3  # as the seed: three projects free, fifty on a paid plan
PAID_COUNT_LIMIT = 50
FREE_CALLS_PER_MONTH = 100
MAX_ROUTE_FEATURES = 8
_FEATURE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")


class NothingToPropose(Exception):
    """The database holds no table of the app's."""


@dataclass
class RouteFeature:
    name: str
    routes: list[Route] = field(default_factory=list)


@dataclass
class Proposal:
    text: str
    recognised: Recognised
    route_features: list[RouteFeature]
    plans: list[Plan]

    def summary(self) -> dict:
        """What was recognised, for `--json`."""
        return {
            "plans": [p.name for p in self.plans],
            "sources": {s.kind: s.table.file_name for s in self.recognised.sources},
            "counted": {c.feature: c.table.file_name for c in self.recognised.counted},
            "route_features": {f.name: [r.path for r in f.routes] for f in self.route_features},
        }


def propose(conn: psycopg.Connection, app_dir: Path | None = None) -> Proposal:
    database = conn.info.dbname
    tables = read_tables(conn)
    if not tables:
        raise NothingToPropose(
            f"database {database} has no tables besides PostgreSQL's and skene's own: "
            "point --database-url at the app's database, after the app's migrations ran"
        )
    found = recognise(conn, tables)
    routes = find_routes(app_dir) if app_dir is not None else []
    plans = [Plan("free", [], "new customers start on the free plan"), *found.plans]
    if len(plans) == 1:
        plans.append(Plan("pro", [], "no prices or plan values found: a paid plan to start from"))
    features = _route_features(routes, {c.feature for c in found.counted})
    text = _Writer(found, plans, features, database, app_dir).write()
    return Proposal(text, found, features, plans)


def _route_features(routes: list[Route], taken: set[str]) -> list[RouteFeature]:
    features: dict[str, RouteFeature] = {}
    writes_first = sorted(routes, key=lambda r: r.method in ("GET", "HEAD"))
    for route in writes_first:
        segments = [
            s
            for s in route.path.split("/")
            if s and s != "*" and s != "api" and not re.fullmatch(r"v\d+", s)
        ]
        name = "_".join(re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_").lower() for s in segments)
        name = name.strip("_") or "api_calls"
        if name in taken:
            name += "_calls"
        if not _FEATURE.fullmatch(name):
            continue
        if name not in features and len(features) >= MAX_ROUTE_FEATURES:
            continue
        features.setdefault(name, RouteFeature(name)).routes.append(route)
    return list(features.values())


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml(name)


class _Writer:
    def __init__(
        self,
        found: Recognised,
        plans: list[Plan],
        features: list[RouteFeature],
        database: str,
        app_dir: Path | None,
    ) -> None:
        self.found = found
        self.plans = plans
        self.paid = [p.name for p in plans[1:]]
        self.features = features
        self.database = database
        self.app_dir = app_dir
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def comment(self, text: str) -> None:
        self.lines.extend(textwrap.wrap(text, 86, initial_indent="# ", subsequent_indent="# "))

    def write(self) -> str:
        where = f" and the code in {self.app_dir}" if self.app_dir else ""
        self.add(
            f"# skene.toml proposed by `skene-pg init` from database {self.database}{where}.",
            "# Every guess says why it was made: check them, change the limits, then",
            "#   skene-pg apply skene.toml --dry-run",
            "#   skene-pg apply skene.toml",
            "",
            'default_plan = "free"',
            "",
        )
        self.write_plans()
        self.write_features()
        self.write_sources()
        self.write_loops()
        return "\n".join(self.lines).rstrip() + "\n"

    def write_plans(self) -> None:
        for plan in self.plans:
            self.comment(plan.why)
            self.add(f"[plans.{_key(plan.name)}]")
            if plan.name != "free":
                self.add("paid = true")
                prices = ", ".join(_toml(p) for p in plan.prices)
                if prices:
                    self.add(f"stripe_prices = [{prices}]")
                else:
                    self.add('# stripe_prices = ["price_..."]   # the Stripe prices of this plan')
            self.add("")

    def _limits(self, free: int, paid: int | str) -> str:
        paid_text = _toml(paid) if isinstance(paid, str) else str(paid)
        return ", ".join([f"free = {free}", *(f"{_key(p)} = {paid_text}" for p in self.paid)])

    def write_features(self) -> None:
        for counted in self.found.counted:
            table = counted.table
            self.comment(
                f"{counted.why}: a customer's {counted.feature} are counted, and an INSERT "
                "past the limit fails inside the app's transaction (SQLSTATE 23514)."
            )
            self.add(
                f"[features.{_key(counted.feature)}]",
                f"count = {{ table = {_toml(table.file_name)}, "
                f"customer = {_toml(counted.customer)} }}",
                f"limits = {{ {self._limits(FREE_COUNT_LIMIT, PAID_COUNT_LIMIT)} }}",
                "",
            )
        for feature in self.features:
            found_in = sorted({r.where for r in feature.routes})
            self.add(
                f"# API route{'s' if len(feature.routes) > 1 else ''} found in "
                f"{', '.join(found_in)}: the app's middleware counts each call with",
                f"# skene.check_and_increment(customer, '{feature.name}').",
                f"[features.{_key(feature.name)}]",
                'period = "month"',
                f"limits = {{ {self._limits(FREE_CALLS_PER_MONTH, 'unlimited')} }}",
                "match = ["
                + ", ".join(
                    f"{{ method = {_toml(r.method)}, path = {_toml(r.path)} }}"
                    for r in feature.routes
                )
                + "]",
                "",
            )
        if not self.found.counted and not self.features:
            self.add(
                "# No table a customer owns rows of, and no API routes (pass --app-dir): a",
                "# feature to start from, counted by",
                "# skene.check_and_increment(customer, 'api_calls').",
                "[features.api_calls]",
                'period = "month"',
                f"limits = {{ {self._limits(FREE_CALLS_PER_MONTH, 'unlimited')} }}",
                "",
            )

    def write_sources(self) -> None:
        for source in self.found.sources:
            self.comment(source.why + ".")
            if source.kind == "subscriptions":
                mode = "price" if "price" in source.values else "plan"
                self.add(
                    f"# A change sets the customer's plan (source app): the {mode} of an active",
                    "# subscription"
                    + (" is mapped through the plans' stripe_prices" if mode == "price" else "")
                    + "; none active: the default plan.",
                )
            self.add(f"[sources.{source.kind}]", f"table = {_toml(source.table.file_name)}")
            for key, value in source.values.items():
                self.add(f"{key} = {_toml(value)}")
            if source.kind == "subscriptions":
                self.add('active_statuses = ["active", "trialing"]')
            self.add("")

    def write_loops(self) -> None:
        feature = next(
            (c.feature for c in self.found.counted),
            self.features[0].name if self.features else "api_calls",
        )
        self.add(
            f"# The first time a free customer reaches the {feature} limit: one upgrade prompt.",
            "[[loops]]",
            'name = "free_tier_limit"',
            'type = "freemium"',
            f"feature = {_toml(feature)}",
            'message = "You\'ve reached your free tier limit. Upgrade to continue."',
            'upgrade_prompt = { channel = "email", template = "upgrade_prompt" }',
            "",
        )
        activity = self.found.source("activity")
        users = self.found.users
        if activity is not None and users is not None:
            column = ident(activity.values["column"])
            query = f"SELECT * FROM {users.sql_name} WHERE {column} < NOW() - INTERVAL '7 days'"
            self.add(
                f"# Retention from the app's own query: users whose {activity.values['column']}",
                "# is a week old get one message an episode (a new one after they were active).",
                "[[loops]]",
                'name = "dormant_users"',
                'type = "retention"',
                'schedule = "0 9 * * *"',
                f"query = {_toml(query)}",
                f"customer_column = {_toml(activity.values['customer'])}",
                'timeout = "10m"',
                'template = "re_engagement"',
            )
        elif users is not None:
            via = (
                "the events source"
                if self.found.source("events")
                else "skene.track() calls from the app"
            )
            self.add(
                f"# Retention: customers inactive for 7 days (activity from {via}).",
                "[[loops]]",
                'name = "dormant_users"',
                'type = "retention"',
                'schedule = "0 9 * * *"',
                'dormant_after = "7 days"',
                'template = "re_engagement"',
            )
