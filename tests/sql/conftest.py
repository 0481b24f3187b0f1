"""A small catalogue written straight into the skene tables (not through `skene-pg
apply`, so these tests prove the SQL alone), and more connections to the test's
database."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from tests.sql.helpers import set_now

# plan free is the default; pro and team are paid.
# feature       period         free        pro          team    loop
# api_calls     month          100         unlimited    1000    free_tier_limit
# daily         day            5           unlimited    -       (none)
# weekly        week           5           unlimited    -       weekly_prompt (disabled)
# rolling       30d            100         unlimited    -       rolling_prompt
# seats         lifetime       3           unlimited    -       (none)
# billed        billing_cycle  5           unlimited    -       (none)
# emails        month, soft    10          unlimited    -       (none)
# sso           month          0           10           -       (none)
# audit_log     month          (no row)    (no row)     50      (none)
CATALOGUE = """
INSERT INTO skene.plans (plan, paid, is_default) VALUES
    ('free', false, true), ('pro', true, false), ('team', true, false);
INSERT INTO skene.features (feature, period, soft) VALUES
    ('api_calls', 'month', false), ('daily', 'day', false), ('weekly', 'week', false),
    ('rolling', '30d', false), ('seats', 'lifetime', false),
    ('billed', 'billing_cycle', false), ('emails', 'month', true), ('sso', 'month', false),
    ('audit_log', 'month', false);
INSERT INTO skene.feature_limits (feature, plan, usage_limit) VALUES
    ('api_calls', 'free', 100), ('api_calls', 'pro', NULL), ('api_calls', 'team', 1000),
    ('daily', 'free', 5), ('daily', 'pro', NULL),
    ('weekly', 'free', 5), ('weekly', 'pro', NULL),
    ('rolling', 'free', 100), ('rolling', 'pro', NULL),
    ('seats', 'free', 3), ('seats', 'pro', NULL),
    ('billed', 'free', 5), ('billed', 'pro', NULL),
    ('emails', 'free', 10), ('emails', 'pro', NULL),
    ('sso', 'free', 0), ('sso', 'pro', 10),
    ('audit_log', 'team', 50);
INSERT INTO skene.loops (name, type, feature, config, enabled) VALUES
    ('free_tier_limit', 'freemium', 'api_calls',
     '{"message": "You''ve reached your free tier limit. Upgrade to continue.",
       "upgrade_prompt": {"channel": "email", "template": "upgrade_prompt"},
       "recovery": {"retries": 0}}', true),
    ('rolling_prompt', 'freemium', 'rolling',
     '{"message": "Rolling limit reached.",
       "upgrade_prompt": {"channel": "email", "template": "rolling_upgrade"},
       "recovery": {"retries": 2}}', true),
    ('weekly_prompt', 'freemium', 'weekly', '{"message": "Weekly limit reached."}', false);
"""

DEFINED_FEATURES = "api_calls, audit_log, billed, daily, emails, rolling, seats, sso, weekly"
START = "2026-03-10 12:00:00"  # where the clock of every connection starts


@pytest.fixture
def catalogue(conn: psycopg.Connection) -> None:
    """The catalogue above; modules that use it say `pytestmark = usefixtures("catalogue")`."""
    conn.execute(CATALOGUE)
    set_now(conn, START)


@pytest.fixture
def connections(
    connect: Callable[..., psycopg.Connection],
) -> Callable[..., list[psycopg.Connection]]:
    """n more autocommit connections, their clocks at START (or `at`)."""

    def _open(n: int, at: str = START) -> list[psycopg.Connection]:
        opened = [connect() for _ in range(n)]
        for c in opened:
            set_now(c, at)
        return opened

    return _open


@pytest.fixture
def login_as(
    conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> Iterator[Callable[[str], psycopg.Connection]]:
    """A connection as a new LOGIN role that is a member of one of skene's roles, as a
    deployment grants them (`GRANT skene_billing TO backoffice`). Its clock is the real
    one: only a superuser's session may move skene's. The roles are cluster-wide, so
    they are dropped afterwards."""
    made: list[tuple[str, psycopg.Connection]] = []

    def _login(group: str) -> psycopg.Connection:
        name = f"{group}_{uuid.uuid4().hex[:8]}"
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                sql.Identifier(name), sql.Identifier(group)
            )
        )
        session = connect(user=name)
        made.append((name, session))
        return session

    yield _login
    for name, session in made:
        session.close()
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
