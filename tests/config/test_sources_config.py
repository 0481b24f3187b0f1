"""[sources.*], a feature's `count` and a retention loop's `query` in skene.toml: what a
valid file becomes, and each mistake with its line and field (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skene_pg.config import ConfigError, load_config
from skene_pg.config.model import SourceSpec

HEAD = """\
default_plan = "free"
[plans.free]
[plans.pro]
paid = true
"""


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "skene.toml"
    path.write_text(HEAD + text)
    return load_config(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return [f"{p.line}: {p.field}: {p.message}" for p in caught.value.problems]


def test_sources_and_a_counted_feature_become_source_specs(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[features.projects]
count = { table = "projects", customer = "owner_id" }
limits = { free = 3, pro = 50 }

[sources.customers]
table = "users"
id = "id"
email = "email"

[sources.subscriptions]
table = "subscriptions"
customer = "user_id"
plan = "plan"
status = "status"
active_statuses = ["active"]

[sources.events]
table = "events"
customer = "user_id"
at = "created_at"

[sources.activity]
table = "users"
customer = "id"
column = "last_activity_at"

[[loops]]
name = "winback"
type = "retention"
schedule = "0 9 * * *"
query = "SELECT * FROM users WHERE re_engagement_sent = false"
customer_column = "id"
timeout = "10m"
template = "re_engagement"
""",
    )
    assert config.features[0].period == "lifetime"
    assert config.features[0].count == {"table": "projects", "customer": "owner_id"}
    assert [s.name for s in config.sources] == [
        "customers",
        "subscriptions",
        "events",
        "activity",
        "count:projects",
    ]
    assert config.sources[-1] == SourceSpec(
        "count:projects",
        "count",
        "projects",
        {"table": "projects", "customer": "owner_id"},
        "projects",
    )
    assert config.loops[0].config["query"].startswith("SELECT * FROM users")


def test_each_mistake_has_its_line_and_field(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
[features.projects]
count = { table = "projects" }
period = "month"
limits = { free = 3 }

[sources.customer]
table = "users"

[sources.customers]
table = "users"
email = "email"

[sources.subscriptions]
table = "subscriptions"
customer = "user_id"
price = "price_id"
plan = "plan"
status = "status"
active_statuses = []

[[loops]]
name = "winback"
type = "retention"
schedule = "0 9 * * *"
query = "SELECT 1"
steps = []
timeout = "soon"
template = "re_engagement"
""",
    )
    assert found == [
        "7: features.projects.count.customer: is required",
        '8: features.projects.period: "month": a counted feature\'s usage is its live rows, '
        'so its period is "lifetime"; leave period out',
        "11: sources.customer: unknown source; allowed: customers, subscriptions, events, activity",
        "14: sources.customers.id: is required",
        "21: sources.subscriptions.price: set exactly one of price (a price id, mapped to a "
        "plan through the plans' stripe_prices) and plan (the plan's name itself)",
        "24: sources.subscriptions.active_statuses: must be a non-empty array of statuses, "
        'e.g. ["active", "trialing"], got an array',
        "31: loops[0].steps: unknown key; allowed: name, type, schedule, template, query, "
        "enabled, recovery, customer_column, timeout, message, holdout_percent, "
        "frequency_cap, quiet_hours",
        '32: loops[0].timeout: "soon" is not a duration; use e.g. "7 days" or "36 hours" or '
        '"10m" (seconds, minutes, hours, days or weeks)',
    ]
