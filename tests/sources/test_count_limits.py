"""Count limits: a feature whose usage is the number of the customer's live rows in an
app table. An INSERT past the limit fails inside the app's own transaction (23514, the
loop's message, a hint); the insert that takes the last slot queues the upgrade prompt
once; deletes free a slot; check() reports it like any other feature."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import pytest
from psycopg import errors

from tests.sources.conftest import PLANS, Apply, decision, scalar

MESSAGE = "You've reached your free tier limit. Upgrade to continue."

COUNTED = (
    PLANS
    + """
[features.projects]
count = { table = "projects", customer = "owner_id" }
limits = { free = 3, pro = 50 }

[[loops]]
name = "project_limit"
type = "freemium"
feature = "projects"
message = "You've reached your free tier limit. Upgrade to continue."
upgrade_prompt = { channel = "email", template = "upgrade_prompt" }
"""
)


@pytest.fixture
def projects(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute(
        "CREATE TABLE public.projects (id bigserial PRIMARY KEY, owner_id integer NOT NULL, "
        "title text NOT NULL DEFAULT 'untitled')"
    )
    return conn


def create_project(conn: psycopg.Connection, owner: int) -> None:
    conn.execute("INSERT INTO projects (owner_id) VALUES (%s)", (owner,))


def prompts(conn: psycopg.Connection) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT dedupe_key FROM skene.jobs WHERE loop_name = 'project_limit' ORDER BY id"
        )
    ]


def test_an_insert_past_the_limit_fails_with_the_loops_message_and_a_hint(
    projects: psycopg.Connection, apply_toml: Apply
) -> None:
    apply_toml(COUNTED)
    for _ in range(3):
        create_project(projects, 7)
    with pytest.raises(errors.CheckViolation) as blocked:
        create_project(projects, 7)
    diag = blocked.value.diag
    assert blocked.value.sqlstate == "23514"
    assert diag.message_primary == MESSAGE
    assert diag.message_detail == "skene: customer '7' has 3 of 3 projects on plan free."
    assert diag.message_hint == "Upgrade the plan, or delete one of the projects to free a slot."
    assert diag.constraint_name == "skene_count_projects"
    assert scalar(projects, "SELECT count(*) FROM projects") == 3
    # other customers count on their own
    create_project(projects, 8)
    assert decision(projects, "8", "projects")["used"] == 1


def test_the_failed_insert_rolls_back_the_apps_transaction(
    projects: psycopg.Connection, apply_toml: Apply, connect: Callable[..., psycopg.Connection]
) -> None:
    apply_toml(COUNTED)
    for _ in range(3):
        create_project(projects, 7)
    app = connect(autocommit=False)
    app.execute("INSERT INTO projects (owner_id) VALUES (9)")
    with pytest.raises(errors.CheckViolation):
        app.execute("INSERT INTO projects (owner_id) VALUES (7)")
    app.rollback()
    assert scalar(projects, "SELECT count(*) FROM projects WHERE owner_id = 9") == 0
    assert decision(projects, "9", "projects")["used"] == 0


def test_taking_the_last_slot_queues_the_prompt_once(
    projects: psycopg.Connection, apply_toml: Apply
) -> None:
    apply_toml(COUNTED)
    create_project(projects, 7)
    create_project(projects, 7)
    assert prompts(projects) == []
    create_project(projects, 7)  # the last slot: "you've reached your limit"
    assert prompts(projects) == ["upgrade_prompt:project_limit:7:projects:lifetime"]
    payload = scalar(projects, "SELECT payload FROM skene.jobs WHERE loop_name = 'project_limit'")
    assert (payload["message"], payload["used"], payload["usage_limit"]) == (MESSAGE, 3, 3)
    for _ in range(3):
        with pytest.raises(errors.CheckViolation):
            create_project(projects, 7)
    # a slot freed and taken again: no second prompt
    projects.execute("DELETE FROM projects WHERE id = (SELECT min(id) FROM projects)")
    create_project(projects, 7)
    assert prompts(projects) == ["upgrade_prompt:project_limit:7:projects:lifetime"]
    assert scalar(projects, "SELECT count(*) FROM skene.limit_hits") == 1


def test_deletes_free_a_slot_and_check_reports_the_count(
    projects: psycopg.Connection, apply_toml: Apply
) -> None:
    apply_toml(COUNTED)
    for _ in range(3):
        create_project(projects, 7)
    assert {k: decision(projects, "7", "projects")[k] for k in ("allowed", "used")} == {
        "allowed": False,
        "used": 3,
    }
    projects.execute(
        "DELETE FROM projects WHERE owner_id = 7 AND id = (SELECT min(id) FROM projects)"
    )
    found = decision(projects, "7", "projects")
    assert (found["allowed"], found["reason"], found["used"], found["remaining"]) == (
        True,
        "ok",
        2,
        1,
    )
    create_project(projects, 7)
    projects.execute("TRUNCATE projects")
    assert decision(projects, "7", "projects")["used"] == 0


def test_moving_a_row_to_another_customer_moves_its_count(
    projects: psycopg.Connection, apply_toml: Apply
) -> None:
    apply_toml(COUNTED)
    for _ in range(3):
        create_project(projects, 7)
    create_project(projects, 8)
    with pytest.raises(errors.CheckViolation):  # 7 is full
        projects.execute("UPDATE projects SET owner_id = 7 WHERE owner_id = 8")
    projects.execute("UPDATE projects SET owner_id = 8 WHERE id = (SELECT min(id) FROM projects)")
    assert (
        decision(projects, "7", "projects")["used"],
        decision(projects, "8", "projects")["used"],
    ) == (2, 2)


def test_a_plan_change_moves_the_limit(projects: psycopg.Connection, apply_toml: Apply) -> None:
    apply_toml(COUNTED)
    for _ in range(3):
        create_project(projects, 7)
    projects.execute("SELECT skene.set_plan('7', 'pro')")
    create_project(projects, 7)
    assert decision(projects, "7", "projects")["usage_limit"] == 50
    projects.execute("SELECT skene.set_plan('7', 'free')")  # 4 of 3 now: nothing new
    with pytest.raises(errors.CheckViolation):
        create_project(projects, 7)


def test_apply_counts_the_rows_already_there_and_twice_changes_nothing(
    projects: psycopg.Connection, apply_toml: Apply
) -> None:
    projects.execute("INSERT INTO projects (owner_id) SELECT 7 FROM generate_series(1, 4)")
    projects.execute("INSERT INTO projects (owner_id) VALUES (8)")
    changes = apply_toml(COUNTED)
    assert [str(c) for c in changes if c.kind == "source"] == [
        "create source count:projects: projects counted from public.projects, backfilled"
    ]
    assert decision(projects, "7", "projects")["used"] == 4
    assert decision(projects, "8", "projects")["used"] == 1
    assert prompts(projects) == []  # a backfill emails no one
    with pytest.raises(errors.CheckViolation):
        create_project(projects, 7)
    assert apply_toml(COUNTED) == []


def test_the_apps_own_role_inserts_and_is_blocked_without_any_skene_grant(
    projects: psycopg.Connection,
    apply_toml: Apply,
    app_role: Callable[[list[str]], psycopg.Connection],
) -> None:
    apply_toml(COUNTED)
    app = app_role(["public.projects"])
    for _ in range(3):
        create_project(app, 7)
    with pytest.raises(errors.CheckViolation):
        create_project(app, 7)
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute("SELECT * FROM skene.usage")


def test_rows_skene_cannot_count_never_fail_the_apps_insert(
    conn: psycopg.Connection, apply_toml: Apply
) -> None:
    conn.execute("CREATE TABLE public.projects (id serial PRIMARY KEY, owner_id text)")
    apply_toml(COUNTED)
    conn.execute("INSERT INTO projects (owner_id) VALUES (NULL), (''), (' padded ')")
    assert scalar(conn, "SELECT count(*) FROM projects") == 3
    assert scalar(conn, "SELECT count(*) FROM skene.usage") == 0


def test_16_concurrent_inserts_at_the_boundary_let_exactly_the_limit_through(
    projects: psycopg.Connection,
    apply_toml: Apply,
    connect: Callable[..., psycopg.Connection],
) -> None:
    apply_toml(COUNTED)
    create_project(projects, 7)  # 2 slots left
    sessions = [connect() for _ in range(16)]
    start = threading.Barrier(len(sessions))
    outcomes: list[str] = []

    def insert(session: psycopg.Connection) -> None:
        start.wait()
        try:
            create_project(session, 7)
            outcomes.append("inserted")
        except errors.CheckViolation:
            outcomes.append("blocked")

    threads = [threading.Thread(target=insert, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["blocked"] * 14 + ["inserted"] * 2
    assert scalar(projects, "SELECT count(*) FROM projects WHERE owner_id = 7") == 3
    assert decision(projects, "7", "projects")["used"] == 3
    assert len(prompts(projects)) == 1


def test_prune_removes_the_trigger(projects: psycopg.Connection, apply_toml: Apply) -> None:
    apply_toml(COUNTED)
    plain = COUNTED.replace(
        'count = { table = "projects", customer = "owner_id" }', 'period = "month"'
    )
    from skene_pg.config import ApplyRefused

    with pytest.raises(ApplyRefused, match="no longer lists source count:projects"):
        apply_toml(plain)
    changes = apply_toml(plain, prune=True)
    assert "delete source count:projects: its trigger is dropped" in [str(c) for c in changes]
    for _ in range(5):
        create_project(projects, 7)  # nothing counts the rows now
    assert scalar(projects, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'skene%'") == 0
