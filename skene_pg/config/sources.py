"""Validation of [sources.*] and of a feature's `count` in skene.toml: the shapes only.
Whether the tables, columns and expressions exist is checked by apply, against the
database (skene_pg.config.source_checks)."""

from __future__ import annotations

from typing import Any

from skene_pg.config.checks import ShapeChecks
from skene_pg.config.model import (
    SOURCE_KINDS,
    FieldPath,
    SourceSpec,
    describe,
    names_of,
)

# kind -> (required, optional) keys. Values are column names or SQL expressions over
# the row, except where noted.
_SOURCE_KEYS = {
    "customers": (("table", "id"), ("email", "name", "timezone")),
    "subscriptions": (("table", "customer", "status"), ("price", "plan", "active_statuses")),
    "events": (("table", "customer", "at"), ()),  # column names
    "activity": (("table", "customer", "column"), ()),  # column names
}
COUNT_KEYS = ("table", "customer")  # column names


class SourceChecks(ShapeChecks):
    """[sources.customers], [sources.subscriptions], [sources.events],
    [sources.activity], and `count = { table, customer }` of a feature."""

    def sources(self, value: Any) -> tuple[SourceSpec, ...]:
        what = "a table of sources ([sources.customers], ...)"
        if self.mapping(value, ("sources",), what) is None:
            return ()
        specs = []
        for kind, body in value.items():
            path: FieldPath = ("sources", kind)
            if kind not in SOURCE_KINDS:
                self.report(path, f"unknown source; allowed: {names_of(SOURCE_KINDS)}")
                continue
            required, optional = _SOURCE_KEYS[kind]
            if self.table(body, path, required=required, optional=optional) is None:
                continue
            ok = all(
                self.string(body[key], (*path, key)) is not None
                for key in (*required, *optional)
                if key in body and key != "active_statuses"
            )
            if kind == "subscriptions":
                ok = self.subscriptions(body, path) and ok
            if ok and all(key in body for key in required):
                specs.append(SourceSpec(kind, kind, body["table"], dict(body)))
        return tuple(specs)

    def subscriptions(self, body: dict, path: FieldPath) -> bool:
        one_of = ("price" in body) != ("plan" in body)
        if not one_of:
            self.report(
                (*path, "price"),
                "set exactly one of price (a price id, mapped to a plan through the plans' "
                "stripe_prices) and plan (the plan's name itself)",
            )
        return self.active_statuses(body, path) and one_of

    def active_statuses(self, body: dict, path: FieldPath) -> bool:
        if "active_statuses" not in body:
            return True
        statuses = body["active_statuses"]
        where = (*path, "active_statuses")
        if not isinstance(statuses, list) or not statuses:
            self.report(
                where,
                f'must be a non-empty array of statuses, e.g. ["active", "trialing"], '
                f"got {describe(statuses)}",
            )
            return False
        return all(self.string(s, (*where, i)) is not None for i, s in enumerate(statuses))

    def count(self, value: Any, path: FieldPath, feature: str) -> SourceSpec | None:
        if self.table(value, path, required=COUNT_KEYS) is None:
            return None
        if not all(key in value for key in COUNT_KEYS):
            return None
        if not all(self.string(value[key], (*path, key)) is not None for key in COUNT_KEYS):
            return None
        return SourceSpec(f"count:{feature}", "count", value["table"], dict(value), feature)
