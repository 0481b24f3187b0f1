"""What the framework middleware reads: a feature's display name and the top-level
upgrade_url in skene.toml (validated, applied, diffed), and skene.gates()."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from skene_pg.config import Change, ConfigError, SkeneConfig, apply_config, load_config

BASE = """\
default_plan = "free"
upgrade_url = "https://app.example.com/billing"

[plans.free]
[plans.pro]
paid = true

[features.api_calls]
name = "API calls"
period = "month"
limits = { free = 100, pro = "unlimited" }
match = [{ method = "POST", path = "/api/**" }, { path = "/v1/*/things" }]

[features.exports]
period = "month"
limits = { free = 0, pro = 50 }

[[loops]]
name = "free_tier_limit"
type = "freemium"
feature = "api_calls"
message = "You've reached your free tier limit. Upgrade to continue."
upgrade_prompt = { channel = "email", template = "upgrade_prompt" }
"""


def load(tmp_path: Path, text: str) -> SkeneConfig:
    path = tmp_path / "skene.toml"
    path.write_text(text)
    return load_config(path)


def problems(tmp_path: Path, text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    return [(p.field, p.line, p.message) for p in raised.value.problems]


def test_name_and_upgrade_url_are_read(tmp_path: Path) -> None:
    config = load(tmp_path, BASE)
    assert config.upgrade_url == "https://app.example.com/billing"
    assert [f.display_name for f in config.features] == ["API calls", None]
    on_site = load(tmp_path, BASE.replace("https://app.example.com/billing", "/billing?from=402"))
    assert on_site.upgrade_url == "/billing?from=402"
    assert load(tmp_path, BASE.replace('upgrade_url = "https://app.example.com/billing"\n', ""))


@pytest.mark.parametrize(
    "bad",
    [
        "billing",
        "javascript:alert(1)",
        "ftp://example.com/x",
        "https://",
        "/bill ing",
        "//evil.com",
    ],
)
def test_an_upgrade_url_must_be_http_or_a_path(tmp_path: Path, bad: str) -> None:
    found = problems(tmp_path, BASE.replace("https://app.example.com/billing", bad))
    assert [(field, line) for field, line, _ in found] == [("upgrade_url", 2)]
    assert "is not an upgrade URL" in found[0][2]


def test_a_display_name_must_be_a_short_string(tmp_path: Path) -> None:
    assert problems(tmp_path, BASE.replace('name = "API calls"', "name = 3")) == [
        ("features.api_calls.name", 9, "must be a non-empty string, got 3")
    ]
    long = "x" * 201
    assert problems(tmp_path, BASE.replace('name = "API calls"', f'name = "{long}"')) == [
        ("features.api_calls.name", 9, "must be at most 200 characters")
    ]


def gates(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT * FROM skene.gates()").fetchall()


def test_apply_stores_them_and_gates_returns_them(tmp_path: Path, conn: psycopg.Connection) -> None:
    changes = apply_config(conn, load(tmp_path, BASE))
    assert Change("create", "setting", "upgrade_url", "https://app.example.com/billing") in changes
    assert (
        Change("create", "feature", "api_calls", 'period month, 2 match patterns, name "API calls"')
        in changes
    )
    assert gates(conn) == [
        (
            "api_calls",
            "API calls",
            [{"method": "POST", "path": "/api/**"}, {"path": "/v1/*/things"}],
            "You've reached your free tier limit. Upgrade to continue.",
            "https://app.example.com/billing",
        ),
        ("exports", "exports", [], None, "https://app.example.com/billing"),
    ]
    assert apply_config(conn, load(tmp_path, BASE)) == []  # applying twice changes nothing


def test_changing_and_removing_them(tmp_path: Path, conn: psycopg.Connection) -> None:
    apply_config(conn, load(tmp_path, BASE))
    changed = BASE.replace('name = "API calls"', 'name = "Requests"').replace(
        "https://app.example.com/billing", "/upgrade"
    )
    assert apply_config(conn, load(tmp_path, changed)) == [
        Change("update", "feature", "api_calls", 'name: "API calls" -> "Requests"'),
        Change("update", "setting", "upgrade_url", "https://app.example.com/billing -> /upgrade"),
    ]
    removed = changed.replace('name = "Requests"\n', "").replace('upgrade_url = "/upgrade"\n', "")
    assert apply_config(conn, load(tmp_path, removed)) == [
        Change("update", "feature", "api_calls", 'name: "Requests" -> none'),
        Change("delete", "setting", "upgrade_url", "was /upgrade"),
    ]
    assert gates(conn)[0][1] == "api_calls"
    assert gates(conn)[0][4] is None


def test_a_disabled_loop_gives_no_message(tmp_path: Path, conn: psycopg.Connection) -> None:
    apply_config(conn, load(tmp_path, BASE + "enabled = false\n"))
    assert gates(conn)[0][3] is None


def test_a_period_change_drops_the_features_idempotency_keys(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    apply_config(conn, load(tmp_path, BASE))
    conn.execute("SELECT * FROM skene.check_and_increment('acme', 'api_calls', 1, 'k')")
    apply_config(conn, load(tmp_path, BASE.replace('period = "month"', 'period = "30d"', 1)))
    assert conn.execute("SELECT count(*) FROM skene.idempotency_keys").fetchone() == (0,)
    refund = conn.execute("SELECT refunded, reason FROM skene.refund('acme', 'api_calls', 1, 'k')")
    assert refund.fetchone() == (0, "not_counted")
