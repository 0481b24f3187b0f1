"""The catalogue's part of the diff: plans, biller prices, the default plan, features
and their limits per plan."""

from __future__ import annotations

import json

from psycopg.types.json import Jsonb

from skene_pg.config.model import SkeneConfig
from skene_pg.config.steps import (
    Catalogue,
    Change,
    Statement,
    Step,
    delete_step,
    limit_text,
    quoted,
    toml_text,
)


def plan_steps(now: Catalogue, config: SkeneConfig) -> list[Step]:
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
                        f"paid: {toml_text(now.plans[plan.name])} -> {toml_text(plan.paid)}",
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


def price_steps(now: Catalogue, config: SkeneConfig, gone_plans: set[str]) -> list[Step]:
    steps: list[Step] = []
    wanted = {price: plan.name for plan in config.plans for price in plan.stripe_prices}
    for price, plan in sorted(now.prices.items()):
        # Prices of deleted plans go with them (ON DELETE CASCADE).
        if price not in wanted and plan not in gone_plans:
            steps.append(
                delete_step(
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


def default_plan_steps(now: Catalogue, config: SkeneConfig) -> list[Step]:
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


def feature_steps(now: Catalogue, config: SkeneConfig) -> list[Step]:
    steps: list[Step] = []
    for feature in config.features:
        wanted = {
            "period": feature.period,
            "soft": feature.soft,
            "meter": feature.meter,
            "match": list(feature.match),
            "name": feature.display_name,
        }
        params = (
            feature.period,
            feature.soft,
            feature.meter,
            Jsonb(wanted["match"]),
            feature.display_name,
            feature.name,
        )
        current = now.features.get(feature.name)
        if current is None:
            described = [
                f"period {feature.period}",
                *(["soft"] if feature.soft else []),
                *([f"meter {feature.meter}"] if feature.meter else []),
                *([f"{len(feature.match)} match patterns"] if feature.match else []),
                *([f"name {json.dumps(feature.display_name)}"] if feature.display_name else []),
            ]
            steps.append(
                (
                    Change("create", "feature", feature.name, ", ".join(described)),
                    [
                        (
                            "INSERT INTO skene.features "
                            "(period, soft, meter, match, name, feature) "
                            "VALUES (%s, %s, %s, %s, %s, %s)",
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
            elif key == "name":
                details.append(f"name: {quoted(current[key])} -> {quoted(wanted[key])}")
            else:
                details.append(f"{key}: {toml_text(current[key])} -> {toml_text(wanted[key])}")
        if "period" in changed:
            # Counts kept under the old period would mean something else under the new
            # one (and the Nd ring has the wrong size): start the feature's usage afresh.
            details[changed.index("period")] += " (usage counters reset)"
            statements.append(("DELETE FROM skene.usage WHERE feature = %s", (feature.name,)))
            # Their keys go too: a key's expiry and a refund read the old period.
            statements.append(
                ("DELETE FROM skene.idempotency_keys WHERE feature = %s", (feature.name,))
            )
        statements.append(
            (
                "UPDATE skene.features SET period = %s, soft = %s, meter = %s, "
                "match = %s, name = %s, updated_at = pg_catalog.now() WHERE feature = %s",
                params,
            )
        )
        steps.append((Change("update", "feature", feature.name, "; ".join(details)), statements))
    return steps


def limit_steps(now: Catalogue, config: SkeneConfig, gone_plans: set[str]) -> list[Step]:
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
                        f"was {limit_text(limit)}; {plan} no longer includes {feature}",
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
                    Change("create", "limit", key, limit_text(limit)),
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
                        f"{limit_text(now.limits[(feature, plan)])} -> {limit_text(limit)}",
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
