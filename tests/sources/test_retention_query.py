"""A retention loop whose condition is the app's own query, verbatim: planned at apply
time, run by run_loop under the path apply stored, one message per episode whatever
the app's own flag says."""

from __future__ import annotations

import psycopg
import pytest

from skene_pg.config import ApplyRefused
from tests.sources.conftest import PLANS, Apply, scalar

SEED_QUERY = (
    "SELECT * FROM users WHERE last_activity_at < NOW() - INTERVAL '7 days' "
    "AND re_engagement_sent = false"
)

CONFIG = (
    PLANS
    + f"""
[features.api_calls]
period = "month"
limits = {{ free = 100, pro = "unlimited" }}

[sources.customers]
table = "users"
id = "id"
email = "email"

[sources.activity]
table = "users"
customer = "id"
column = "last_activity_at"

[[loops]]
name = "re_engage"
type = "retention"
schedule = "0 9 * * *"
query = "{SEED_QUERY}"
customer_column = "id"
timeout = "10m"
template = "re_engagement"
holdout_percent = 0
quiet_hours = {{ start = "00:00", end = "00:00" }}
"""
)


@pytest.fixture
def users(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute(
        "CREATE TABLE public.users (id bigserial PRIMARY KEY, email text NOT NULL, "
        "last_activity_at timestamptz, re_engagement_sent boolean NOT NULL DEFAULT false)"
    )
    conn.execute(
        "INSERT INTO users (email, last_activity_at, re_engagement_sent) VALUES "
        "('away@example.com', now() - interval '9 days', false), "
        "('flagged@example.com', now() - interval '9 days', true), "
        "('here@example.com', now() - interval '1 day', false)"
    )
    return conn


def run(conn: psycopg.Connection, minutes_ago: int) -> tuple[str, int, str | None]:
    row = conn.execute(
        "SELECT state, queued, error FROM skene.run_loop('re_engage', "
        "date_trunc('minute', now()) - make_interval(mins => %s))",
        (minutes_ago,),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def queued(conn: psycopg.Connection) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT customer_id FROM skene.jobs WHERE loop_name = 're_engage' ORDER BY id"
        )
    ]


def test_the_seed_query_works_verbatim_and_messages_once_an_episode(
    users: psycopg.Connection, apply_toml: Apply
) -> None:
    apply_toml(CONFIG)
    assert scalar(users, "SELECT config ->> 'query' FROM skene.loops") == SEED_QUERY
    assert run(users, 10) == ("succeeded", 1, None)
    assert queued(users) == ["1"]
    # skene does not write the app's flag: the query still returns user 1, and the
    # episode (skene's last activity of the user) keeps it from a second message
    assert scalar(users, "SELECT re_engagement_sent FROM users WHERE id = 1") is False
    assert run(users, 5) == ("succeeded", 0, None)
    # active again (the activity source sees the column), then away once more: a new
    # episode, a new message
    users.execute("UPDATE users SET last_activity_at = now() - interval '8 days' WHERE id = 1")
    assert run(users, 1) == ("succeeded", 1, None)
    assert queued(users) == ["1", "1"]


def test_the_query_and_its_column_are_checked_at_apply_time(
    users: psycopg.Connection, apply_toml: Apply
) -> None:
    with pytest.raises(ApplyRefused) as refused:
        apply_toml(CONFIG.replace('customer_column = "id"', 'customer_column = "user_id"'))
    assert "loops[0].customer_column: the query of loop re_engage returns no column" in str(
        refused.value
    )
    assert "'user_id' (it returns id, email, last_activity_at, re_engagement_sent)" in str(
        refused.value
    )
    with pytest.raises(ApplyRefused) as refused:
        apply_toml(CONFIG.replace("re_engagement_sent = false", "re_engaged = false"))
    assert "loops[0].query: the query of loop re_engage does not plan with search_path" in str(
        refused.value
    )
    assert 'column "re_engaged" does not exist' in str(refused.value)
    assert scalar(users, "SELECT count(*) FROM skene.loops") == 0


def test_a_query_loop_is_refused_where_other_roles_control_the_path(
    users: psycopg.Connection, apply_toml: Apply
) -> None:
    users.execute("CREATE SCHEMA open_to_all")
    users.execute("GRANT CREATE ON SCHEMA open_to_all TO PUBLIC")
    users.execute("SET search_path = open_to_all, public")
    with pytest.raises(ApplyRefused, match="open_to_all"):
        apply_toml(CONFIG)
