"""`apply_config` against a real, freshly migrated database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from skene_pg import db
from skene_pg.config import ApplyRefused, Change, SkeneConfig, apply_config, diff, load_config

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
default_plan = "free"

[plans.free]
[plans.pro]
paid = true

[features.api_calls]
period = "30d"
limits = { free = 100, pro = "unlimited" }

[features.exports]
period = "month"
limits = { free = 0, pro = 50 }
soft = true
match = [{ method = "POST", path = "/api/exports/*" }]

[[loops]]
name = "free_tier_limit"
type = "freemium"
feature = "api_calls"
message = "Upgrade to continue."
upgrade_prompt = { channel = "email", template = "upgrade_prompt" }
recovery = { retries = 0 }
"""

BASE_CHANGES = [
    Change("create", "plan", "free"),
    Change("create", "plan", "pro", "paid"),
    Change("create", "default_plan", "free", "new customers start on it"),
    Change("create", "feature", "api_calls", "period 30d"),
    Change("create", "feature", "exports", "period month, soft, 1 match patterns"),
    Change("create", "limit", "api_calls/free", "100"),
    Change("create", "limit", "api_calls/pro", "unlimited"),
    Change("create", "limit", "exports/free", "0 (not in plan)"),
    Change("create", "limit", "exports/pro", "50"),
    Change("create", "loop", "free_tier_limit", "freemium on api_calls"),
]


@pytest.fixture
def load(tmp_path: Path) -> Callable[[str], SkeneConfig]:
    def _load(text: str) -> SkeneConfig:
        path = tmp_path / "skene.toml"
        path.write_text(text)
        return load_config(path)

    return _load


def catalogue(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row `apply` owns, with updated_at, in a stable order."""
    return {
        "plans": conn.execute(
            "SELECT plan, paid, is_default, updated_at FROM skene.plans ORDER BY plan"
        ).fetchall(),
        "features": conn.execute(
            "SELECT feature, period, soft, meter, match, updated_at "
            "FROM skene.features ORDER BY feature"
        ).fetchall(),
        "limits": conn.execute(
            "SELECT feature, plan, usage_limit FROM skene.feature_limits ORDER BY feature, plan"
        ).fetchall(),
        "loops": conn.execute(
            "SELECT name, type, feature, config, enabled, updated_at FROM skene.loops ORDER BY name"
        ).fetchall(),
    }


def increment(conn: psycopg.Connection, customer: str, feature: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT allowed, reason, used FROM skene.check_and_increment(%s, %s)", (customer, feature)
    ).fetchone()
    assert row is not None
    return row


def test_apply_creates_exactly_the_rows(conn: psycopg.Connection, load: Any) -> None:
    changes = apply_config(conn, load(BASE))
    assert changes == BASE_CHANGES
    rows = catalogue(conn)
    assert [r[:3] for r in rows["plans"]] == [("free", False, True), ("pro", True, False)]
    assert [r[:5] for r in rows["features"]] == [
        ("api_calls", "30d", False, None, []),
        ("exports", "month", True, None, [{"method": "POST", "path": "/api/exports/*"}]),
    ]
    assert rows["limits"] == [
        ("api_calls", "free", 100),
        ("api_calls", "pro", None),
        ("exports", "free", 0),
        ("exports", "pro", 50),
    ]
    assert [r[:5] for r in rows["loops"]] == [
        (
            "free_tier_limit",
            "freemium",
            "api_calls",
            {
                "message": "Upgrade to continue.",
                "upgrade_prompt": {"channel": "email", "template": "upgrade_prompt"},
                "recovery": {"retries": 0},
            },
            True,
        )
    ]
    assert str(changes[1]) == "create plan pro: paid"
    assert str(changes[0]) == "create plan free"


def test_applying_twice_changes_nothing_and_keeps_updated_at(
    conn: psycopg.Connection, load: Any
) -> None:
    config = load(BASE)
    apply_config(conn, config)
    before = catalogue(conn)
    assert apply_config(conn, config) == []
    assert diff(conn, config) == []
    assert catalogue(conn) == before


def test_dry_run_lists_the_changes_and_writes_nothing(conn: psycopg.Connection, load: Any) -> None:
    config = load(BASE)
    assert diff(conn, config) == BASE_CHANGES
    assert apply_config(conn, config, dry_run=True) == BASE_CHANGES
    assert catalogue(conn) == {"plans": [], "features": [], "limits": [], "loops": []}
    apply_config(conn, config)
    changed = load(BASE.replace("free = 100", "free = 200"))
    before = catalogue(conn)
    assert apply_config(conn, changed, dry_run=True) == [
        Change("update", "limit", "api_calls/free", "100 -> 200")
    ]
    assert catalogue(conn) == before


def test_changing_a_limit_updates_only_that_row(conn: psycopg.Connection, load: Any) -> None:
    apply_config(conn, load(BASE))
    for _ in range(3):
        increment(conn, "c", "api_calls")
    before = catalogue(conn)
    changes = apply_config(conn, load(BASE.replace("free = 100", "free = 2")))
    assert changes == [Change("update", "limit", "api_calls/free", "100 -> 2")]
    after = catalogue(conn)
    assert after["limits"][0] == ("api_calls", "free", 2)
    assert after["limits"][1:] == before["limits"][1:]
    assert {k: v for k, v in after.items() if k != "limits"} == {
        k: v for k, v in before.items() if k != "limits"
    }
    # The gate sees the new limit at once (its cached limit was invalidated).
    assert increment(conn, "c", "api_calls")[:2] == (False, "limit_reached")


def test_updates_say_what_changed(conn: psycopg.Connection, load: Any) -> None:
    apply_config(conn, load(BASE))
    text = (
        BASE.replace("paid = true", "paid = false")
        .replace("soft = true", 'soft = false\nmeter = "exports"')
        .replace('pro = "unlimited"', "pro = 1000")
        .replace("free = 0, pro = 50", "pro = 50")
        .replace('"Upgrade to continue."', '"Please upgrade."')
        + "enabled = false\n"
    )
    assert apply_config(conn, load(text)) == [
        Change("update", "plan", "pro", "paid: true -> false"),
        Change("update", "feature", "exports", "soft: true -> false; meter: none -> exports"),
        Change(
            "delete",
            "limit",
            "exports/free",
            "was 0 (not in plan); free no longer includes exports",
        ),
        Change("update", "limit", "api_calls/pro", "unlimited -> 1000"),
        Change("update", "loop", "free_tier_limit", "enabled: true -> false; changed message"),
    ]
    assert apply_config(conn, load(text)) == []
    assert conn.execute("SELECT enabled, config->>'message' FROM skene.loops").fetchone() == (
        False,
        "Please upgrade.",
    )


def test_removing_a_loop_deletes_it(conn: psycopg.Connection, load: Any) -> None:
    apply_config(conn, load(BASE))
    without_loop = BASE[: BASE.index("[[loops]]")]
    assert apply_config(conn, load(without_loop)) == [
        Change("delete", "loop", "free_tier_limit", "freemium; no longer in the file")
    ]
    assert conn.execute("SELECT count(*) FROM skene.loops").fetchone() == (0,)


def test_removing_a_feature_needs_prune(conn: psycopg.Connection, load: Any) -> None:
    apply_config(conn, load(BASE))
    increment(conn, "c", "exports")  # not in free: a limit hit, which the delete cascades
    before = catalogue(conn)
    start, end = BASE.index("[features.exports]"), BASE.index("[[loops]]")
    # Also change a limit, to prove nothing at all is applied when refused.
    without = (BASE[:start] + BASE[end:]).replace("free = 100", "free = 5")
    with pytest.raises(ApplyRefused) as refused:
        apply_config(conn, load(without))
    assert "feature exports" in str(refused.value)
    assert "--prune" in str(refused.value)
    with pytest.raises(ApplyRefused):
        diff(conn, load(without))
    assert catalogue(conn) == before

    assert apply_config(conn, load(without), prune=True) == [
        Change("update", "limit", "api_calls/free", "100 -> 5"),
        Change("delete", "feature", "exports", "its limits, overrides and usage go with it"),
    ]
    assert [r[0] for r in catalogue(conn)["features"]] == ["api_calls"]
    assert conn.execute(
        "SELECT count(*) FROM skene.feature_limits WHERE feature = 'exports'"
    ).fetchone() == (0,)


def test_a_feature_a_loop_used_can_be_pruned_with_the_loop(
    conn: psycopg.Connection, load: Any
) -> None:
    apply_config(conn, load(BASE))
    only_exports = (
        BASE[: BASE.index("[features.api_calls]")]
        + BASE[BASE.index("[features.exports]") : BASE.index("[[loops]]")]
    )
    changes = apply_config(conn, load(only_exports), prune=True)
    assert [(c.action, c.kind, c.name) for c in changes] == [
        ("delete", "loop", "free_tier_limit"),
        ("delete", "feature", "api_calls"),
    ]


def test_removing_a_plan_needs_prune_and_no_customers(conn: psycopg.Connection, load: Any) -> None:
    text = BASE.replace("[plans.pro]", "[plans.team]\n[plans.pro]")
    apply_config(conn, load(text))
    conn.execute("SELECT skene.set_plan('c1', 'pro')")
    conn.execute("SELECT skene.set_plan('c2', 'pro')")
    without_pro = (
        BASE.replace("[plans.pro]\npaid = true\n", "")
        .replace(', pro = "unlimited"', "")
        .replace(", pro = 50", "")
    )
    before = catalogue(conn)
    for prune in (False, True):
        with pytest.raises(ApplyRefused) as refused:
            apply_config(conn, load(without_pro), prune=prune)
        message = str(refused.value)
        assert "plan pro still has 2 customers" in message
        assert "skene.set_plan" in message
        assert ("--prune" in message) is not prune
        assert ("plans pro, team" in message) is not prune  # all named without --prune
    assert catalogue(conn) == before

    conn.execute("SELECT skene.set_plan('c1', 'free')")
    conn.execute("SELECT skene.set_plan('c2', 'free')")
    changes = apply_config(conn, load(without_pro), prune=True)
    assert [(c.action, c.kind, c.name) for c in changes] == [
        ("delete", "plan", "pro"),
        ("delete", "plan", "team"),
    ]
    assert [r[0] for r in catalogue(conn)["plans"]] == ["free"]


def test_changing_a_period_resets_its_counters(conn: psycopg.Connection, load: Any) -> None:
    apply_config(conn, load(BASE))
    for _ in range(5):
        increment(conn, "c", "api_calls")
    conn.execute("SELECT skene.set_plan('p', 'pro')")
    increment(conn, "p", "exports")  # another feature's usage is kept
    changes = apply_config(conn, load(BASE.replace('"30d"', '"month"')))
    assert changes == [
        Change("update", "feature", "api_calls", "period: 30d -> month (usage counters reset)")
    ]
    assert conn.execute("SELECT feature FROM skene.usage").fetchall() == [("exports",)]
    assert increment(conn, "c", "api_calls") == (True, "ok", 1)


def test_switching_the_default_plan(conn: psycopg.Connection, load: Any) -> None:
    apply_config(conn, load(BASE))
    increment(conn, "old", "api_calls")
    changes = apply_config(
        conn, load(BASE.replace('default_plan = "free"', 'default_plan = "pro"'))
    )
    assert changes == [Change("update", "default_plan", "pro", "was free")]
    assert conn.execute("SELECT plan FROM skene.plans WHERE is_default").fetchall() == [("pro",)]
    increment(conn, "new", "api_calls")
    assert conn.execute(
        "SELECT customer_id, plan FROM skene.customers ORDER BY customer_id"
    ).fetchall() == [("new", "pro"), ("old", "free")]


def test_a_new_plan_can_become_the_default(conn: psycopg.Connection, load: Any) -> None:
    apply_config(conn, load(BASE))
    text = BASE.replace('default_plan = "free"', 'default_plan = "starter"').replace(
        "[plans.free]", "[plans.starter]\n[plans.free]"
    )
    assert apply_config(conn, load(text)) == [
        Change("create", "plan", "starter"),
        Change("update", "default_plan", "starter", "was free"),
    ]
    assert conn.execute("SELECT plan FROM skene.plans WHERE is_default").fetchall() == [
        ("starter",)
    ]


def test_the_example_allows_100_api_calls_then_blocks(conn: psycopg.Connection) -> None:
    apply_config(conn, load_config(ROOT / "examples" / "skene.toml"))
    decisions = [increment(conn, "c", "api_calls") for _ in range(101)]
    assert all(d[0] for d in decisions[:100])
    assert decisions[99] == (True, "ok", 100)
    assert decisions[100] == (False, "limit_reached", 100)
    jobs = conn.execute(
        "SELECT loop_name, payload->>'template', coalesce(payload->>'message', "
        "payload->>'threshold') FROM skene.jobs ORDER BY id"
    ).fetchall()
    assert jobs == [
        ("api_milestones", "milestone", "10"),  # the example celebrates calls 10 and 50
        ("api_milestones", "milestone", "50"),
        (
            "free_tier_limit",
            "upgrade_prompt",
            "You've reached your free tier limit. Upgrade to continue.",
        ),
    ]
    conn.execute("SELECT skene.set_plan('c', 'pro')")
    assert increment(conn, "c", "api_calls")[:2] == (True, "ok")


def test_works_on_a_connection_that_is_not_autocommit(
    db_url: str, conn: psycopg.Connection, load: Any
) -> None:
    # As `skene-pg demo` calls it: the changes are committed when the block ends.
    with db.connect(db_url) as own:
        assert apply_config(own, load(BASE)) == BASE_CHANGES
    assert len(catalogue(conn)["plans"]) == 2


def test_concurrent_applies_serialise(
    connect: Callable[..., psycopg.Connection], load: Any
) -> None:
    config = load(BASE)
    first = connect(autocommit=False)
    second = connect()
    first.execute("SELECT 1")  # open a transaction, so apply's becomes a savepoint in it
    assert apply_config(first, config) == BASE_CHANGES  # the lock is held until commit
    result: list[list[Change]] = []
    thread = threading.Thread(target=lambda: result.append(apply_config(second, config)))
    thread.start()
    deadline = time.monotonic() + 10
    waiting = 0
    while time.monotonic() < deadline and not waiting:
        row = first.execute(
            "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
        waiting = row[0] if row else 0
    assert waiting == 1, "the second apply did not wait for the first"
    first.commit()
    thread.join(timeout=10)
    assert result == [[]]  # it saw the committed catalogue: nothing left to do


def test_stripe_prices_map_to_plans(conn: psycopg.Connection, load: Any) -> None:
    prices = "SELECT price_id, plan FROM skene.plan_prices ORDER BY 1"
    with_prices = BASE.replace(
        "paid = true\n", 'paid = true\nstripe_prices = ["price_m", "price_y"]\n'
    )
    apply_config(conn, load(with_prices))
    assert conn.execute(prices).fetchall() == [("price_m", "pro"), ("price_y", "pro")]

    team = '[plans.team]\npaid = true\nstripe_prices = ["price_y"]\n\n[plans.pro]'
    moved = with_prices.replace("[plans.pro]", team).replace(
        '["price_m", "price_y"]', '["price_m"]'
    )
    assert apply_config(conn, load(moved)) == [
        Change("create", "plan", "team", "paid"),
        Change("update", "price", "price_y", "pro -> team"),
    ]
    assert conn.execute(prices).fetchall() == [("price_m", "pro"), ("price_y", "team")]

    # Back to no prices: pro's is deleted; team's goes with the pruned plan.
    changes = apply_config(conn, load(BASE), prune=True)
    assert Change("delete", "price", "price_m", "was pro") in changes
    assert [c for c in changes if c.kind == "price"] == [
        Change("delete", "price", "price_m", "was pro")
    ]
    assert conn.execute(prices).fetchall() == []
