"""Customer data from Django's user model, and the management commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integrations.conftest import SKENE_TOML


def customer(conn: psycopg.Connection, user: Any) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT email, name, timezone FROM skene.customers WHERE customer_id = %s",
        (str(user.pk),),
    ).fetchone()


def test_a_saved_user_is_identified(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    # the test settings read the time zone from last_name, to have a field for it
    user = make_user("ada", email="ada@example.com", first_name="Ada", last_name="Europe/London")
    assert customer(dbconn, user) == ("ada@example.com", "Ada Europe/London", "Europe/London")
    user.email = "ada@lovelace.example"
    user.save()
    assert customer(dbconn, user) == ("ada@lovelace.example", "Ada Europe/London", "Europe/London")


def test_a_rolled_back_save_is_not_identified(django_db: str, dbconn: psycopg.Connection) -> None:
    from django.contrib.auth import get_user_model
    from django.db import transaction

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        get_user_model().objects.create_user("gone", email="gone@example.com")
        raise Undo
    assert dbconn.execute("SELECT count(*) FROM skene.customers").fetchone() == (0,)


def test_a_bad_time_zone_is_logged_not_raised(
    make_user: Callable[..., Any], dbconn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    user = make_user("bob", email="bob@example.com", last_name="Nowhere/Land")
    assert customer(dbconn, user) is None
    assert any("unknown time zone" in r.getMessage() for r in caplog.records)


def test_backfill_identifies_existing_users(
    django_db: str, dbconn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import override_settings

    with override_settings(SKENE={**settings.SKENE, "SYNC_USERS": False}):
        users = [
            get_user_model().objects.create_user(f"u{i}", email=f"u{i}@example.com")
            for i in range(5)
        ]
    assert dbconn.execute("SELECT count(*) FROM skene.customers").fetchone() == (0,)
    call_command("skene_backfill")
    assert [customer(dbconn, u) for u in users] == [
        (f"u{i}@example.com", None, None) for i in range(5)
    ]


def test_skene_apply_uses_the_settings_database(
    django_db: str, dbconn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from django.core.management import call_command

    path = tmp_path / "changed.toml"
    path.write_text(
        SKENE_TOML.replace(
            "limits = { free = 20, pro = 1000 }", "limits = { free = 25, pro = 1000 }"
        )
    )
    call_command("skene_apply", str(path), "--dry-run")
    assert "update limit exports/free: 20 -> 25" in capsys.readouterr().out
    limit = (
        "SELECT usage_limit FROM skene.feature_limits WHERE feature = 'exports' AND plan = 'free'"
    )
    assert dbconn.execute(limit).fetchone() == (20,)
    call_command("skene_apply", str(path))
    assert dbconn.execute(limit).fetchone() == (25,)


def test_skene_listen_drains_the_queue(
    make_user: Callable[..., Any], dbconn: psycopg.Connection, tmp_path: Path
) -> None:
    from django.core.management import call_command
    from django.test import Client

    user = make_user("ada", email="ada@example.com")
    client = Client()
    client.force_login(user)
    for _ in range(21):
        client.get("/exports")
    outbox = tmp_path / "outbox"
    call_command("skene_listen", "--drain", "--outbox-dir", str(outbox))
    sent = list(outbox.glob("*.eml"))
    assert len(sent) == 1
    assert "Free plans include 20 exports a month." in sent[0].read_text()
