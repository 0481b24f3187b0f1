"""Read and validate `skene.toml`.

Pure: no database, environment or network. The whole file is checked and every
mistake is reported with its file, line and dotted field (`loops[1].dormant_after`),
so a user fixes them all in one go rather than one per run.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from skene_pg.config.locate import Locator, syntax_problem
from skene_pg.config.loops import LoopChecks
from skene_pg.config.model import (
    FEATURE_NAME,
    HTTP_METHODS,
    KEEP_FINISHED_MINIMUM,
    MAX_BIGINT,
    MAX_DISPLAY_NAME,
    PLAN_NAME,
    UNLIMITED,
    ConfigError,
    FeatureSpec,
    FieldPath,
    HousekeepingSpec,
    PlanSpec,
    Problem,
    SkeneConfig,
    SourceSpec,
    describe,
    duration_text,
    is_period,
    names_of,
)
from skene_pg.config.sources import SourceChecks


def load_config(path: Path) -> SkeneConfig:
    """Parse and validate `path`; raises ConfigError listing every mistake."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([Problem(path, None, "", f"cannot read the file: {reason}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([syntax_problem(path, text, exc)]) from exc
    checker = DocumentChecker(path, Locator(text))
    config = checker.document(data)
    if checker.problems or config is None:
        raise ConfigError(sorted(checker.problems, key=lambda p: p.line or 0))
    return config


class DocumentChecker(LoopChecks, SourceChecks):
    """The whole file: default plan, plans, features (limits, match, count), loops,
    housekeeping, then sources."""

    def document(self, data: dict) -> SkeneConfig | None:
        self.table(
            data,
            (),
            required=("default_plan", "plans"),
            optional=("features", "loops", "housekeeping", "upgrade_url", "sources"),
        )
        plans = self.plans(data["plans"]) if "plans" in data else ()
        plan_names = tuple(p.name for p in plans)
        default = data.get("default_plan", "")
        # Without a valid plans table every plan would look undefined: say it once.
        if (
            "default_plan" in data
            and self.string(default, ("default_plan",)) is not None
            and isinstance(data.get("plans"), dict)
            and default not in plan_names
        ):
            self.report(
                ("default_plan",),
                f"{describe(default)} is not a defined plan; defined: {names_of(plan_names)}",
            )
        features = self.features(data.get("features", {}), plan_names)
        loops = self.loops(data.get("loops", []), tuple(f.name for f in features))
        housekeeping = self.housekeeping(data.get("housekeeping", {}))
        upgrade_url = self.upgrade_url(data["upgrade_url"]) if "upgrade_url" in data else None
        sources = self.sources(data.get("sources", {}))
        counted = tuple(
            SourceSpec(f"count:{f.name}", "count", f.count["table"], f.count, f.name)
            for f in features
            if f.count is not None
        )
        if self.problems:
            return None
        return SkeneConfig(
            default,
            plans,
            features,
            loops,
            self.file,
            housekeeping=housekeeping,
            upgrade_url=upgrade_url,
            sources=sources + counted,
        )

    def housekeeping(self, value: Any) -> HousekeepingSpec:
        path: FieldPath = ("housekeeping",)
        if self.table(value, path, optional=("keep_finished",)) is None:
            return HousekeepingSpec()
        if "keep_finished" not in value:
            return HousekeepingSpec()
        where = (*path, "keep_finished")
        seconds = self.duration(value["keep_finished"], where)
        if seconds is None:
            return HousekeepingSpec()
        if seconds < KEEP_FINISHED_MINIMUM:
            self.report(
                where,
                f"{describe(value['keep_finished'])} is shorter than "
                f"{duration_text(KEEP_FINISHED_MINIMUM)}, the least finished work is kept "
                "(a day's dedupe keys, e.g. the daily reconcile's, must outlive the day); "
                'use e.g. "30 days"',
            )
            return HousekeepingSpec()
        return HousekeepingSpec(seconds)

    def upgrade_url(self, value: Any) -> str | None:
        """An absolute http(s) URL, or a path on the app's own site ("/billing")."""
        path: FieldPath = ("upgrade_url",)
        if self.string(value, path) is None:
            return None
        parts = urlsplit(value)
        absolute = parts.scheme in ("http", "https") and bool(parts.netloc)
        on_site = not parts.scheme and not parts.netloc and value.startswith("/")
        if any(c.isspace() or ord(c) < 32 for c in value) or not (absolute or on_site):
            self.report(
                path,
                f"{describe(value)} is not an upgrade URL; use an absolute http(s) URL "
                '(e.g. "https://app.example.com/billing") or a path on your site ("/billing")',
            )
            return None
        return value

    def plans(self, value: Any) -> tuple[PlanSpec, ...]:
        if self.mapping(value, ("plans",), "a table of plans ([plans.free], ...)") is None:
            return ()
        if not value:
            self.report(("plans",), "define at least one plan, e.g. [plans.free]")
        specs = []
        owner: dict[str, str] = {}  # stripe price -> plan, to catch a price mapped twice
        for name, body in value.items():
            path: FieldPath = ("plans", name)
            self.name(name, path, PLAN_NAME, "plan")
            if self.table(body, path, optional=("paid", "stripe_prices")) is None:
                specs.append(PlanSpec(name))
                continue
            paid = self.boolean(body.get("paid", False), (*path, "paid"))
            prices = self.stripe_prices(body.get("stripe_prices", []), name, owner)
            specs.append(PlanSpec(name, bool(paid), prices))
        return tuple(specs)

    def stripe_prices(self, value: Any, plan: str, owner: dict[str, str]) -> tuple[str, ...]:
        path: FieldPath = ("plans", plan, "stripe_prices")
        if not isinstance(value, list):
            self.report(path, f"must be an array of price ids, got {describe(value)}")
            return ()
        prices = []
        for index, price in enumerate(value):
            if self.string(price, (*path, index)) is None:
                continue
            if price in owner:
                where = (
                    "listed twice"
                    if owner[price] == plan
                    else f"already mapped to plan {owner[price]}"
                )
                self.report(
                    (*path, index),
                    f"{describe(price)} is {where}; a price may map to one plan only",
                )
                continue
            owner[price] = plan
            prices.append(price)
        return tuple(prices)

    def features(self, value: Any, plans: tuple[str, ...]) -> tuple[FeatureSpec, ...]:
        what = "a table of features ([features.api_calls], ...)"
        if self.mapping(value, ("features",), what) is None:
            return ()
        specs = []
        for name, body in value.items():
            path: FieldPath = ("features", name)
            self.name(name, path, FEATURE_NAME, "feature")
            counted = isinstance(body, dict) and "count" in body
            # A counted feature's usage is its live rows: no period (it is "lifetime").
            required = ("limits",) if counted else ("period", "limits")
            optional = (
                "name",
                "soft",
                "meter",
                "match",
                "count",
                *(("period",) if counted else ()),
            )
            if self.table(body, path, required=required, optional=optional) is None:
                continue
            period = body.get("period", "lifetime" if counted else None)
            count = self.count(body["count"], (*path, "count"), name) if counted else None
            if counted and period != "lifetime":
                self.report(
                    (*path, "period"),
                    f"{describe(period)}: a counted feature's usage is its live rows, "
                    'so its period is "lifetime"; leave period out',
                )
            elif "period" in body and not is_period(period):
                self.report(
                    (*path, "period"),
                    f"{describe(period)} is not a period; use day, "
                    "week, month, Nd (e.g. 30d, 1-366), billing_cycle or lifetime",
                )
            limits = self.limits(body.get("limits", {}), (*path, "limits"), plans)
            soft = self.boolean(body.get("soft", False), (*path, "soft"))
            meter = body.get("meter")
            if meter is not None:
                self.string(meter, (*path, "meter"))
            match = self.match(body.get("match", []), (*path, "match"))
            display = body.get("name")
            if (
                display is not None
                and self.string(display, (*path, "name")) is not None
                and len(display) > MAX_DISPLAY_NAME
            ):
                self.report((*path, "name"), f"must be at most {MAX_DISPLAY_NAME} characters")
            specs.append(
                FeatureSpec(
                    name,
                    period,
                    limits,
                    bool(soft),
                    meter,
                    match,
                    display_name=display,
                    count=count.config if count is not None else None,
                )
            )
        return tuple(specs)

    def limits(self, value: Any, path: FieldPath, plans: tuple[str, ...]) -> dict[str, int | None]:
        what = 'a table of plan = limit, e.g. { free = 100, pro = "unlimited" }'
        if self.mapping(value, path, what) is None:
            return {}
        limits: dict[str, int | None] = {}
        for plan, limit in value.items():
            if plan not in plans:
                self.report(
                    (*path, plan),
                    f"{describe(plan)} is not a defined plan; defined: {names_of(plans)}",
                )
            if limit == UNLIMITED:
                limits[plan] = None
            elif type(limit) is int and 0 <= limit <= MAX_BIGINT:  # bool is not a number here
                limits[plan] = limit
            else:
                self.report(
                    (*path, plan),
                    f"must be a whole number >= 0 (0: not in the plan) or "
                    f'"unlimited", got {describe(limit)}',
                )
        return limits

    def match(self, value: Any, path: FieldPath) -> tuple[dict, ...]:
        if not isinstance(value, list):
            self.report(
                path,
                f'must be an array of {{ method = "POST", path = "/api/..." }} '
                f"tables, got {describe(value)}",
            )
            return ()
        for index, pattern in enumerate(value):
            where = (*path, index)
            if self.table(pattern, where, required=("path",), optional=("method",)) is None:
                continue
            if "method" in pattern:
                self.choice(pattern["method"], (*where, "method"), HTTP_METHODS)
            if (
                "path" in pattern
                and self.string(pattern["path"], (*where, "path"))
                and not pattern["path"].startswith("/")
            ):
                self.report((*where, "path"), f'{describe(pattern["path"])} must start with "/"')
        return tuple(value)
