"""Customers, subscriptions and activity from a Next.js/Prisma schema: quoted "User" and
"Subscription" tables with camelCase columns, created as Prisma's migrations do."""

from __future__ import annotations

import psycopg
import pytest

from skene_pg.config import ApplyRefused
from tests.sources.conftest import PLANS, Apply, scalar

PRISMA_SCHEMA = """
CREATE TABLE "User" (
    "id" TEXT NOT NULL, "email" TEXT NOT NULL, "name" TEXT, "timeZone" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "lastActiveAt" TIMESTAMP(3),
    CONSTRAINT "User_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
CREATE TABLE "Subscription" (
    "id" TEXT NOT NULL, "userId" TEXT NOT NULL, "priceId" TEXT, "plan" TEXT,
    "status" TEXT NOT NULL, "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "Subscription_pkey" PRIMARY KEY ("id"));
CREATE INDEX "Subscription_userId_idx" ON "Subscription"("userId");
ALTER TABLE "Subscription" ADD CONSTRAINT "Subscription_userId_fkey" FOREIGN KEY ("userId")
    REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
CREATE TABLE "Event" (
    "id" SERIAL NOT NULL, "userId" TEXT NOT NULL, "type" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "Event_pkey" PRIMARY KEY ("id"));
"""

SOURCES = (
    PLANS
    + """
[sources.customers]
table = "User"
id = "id"
email = "email"
name = "name"
timezone = "timeZone"

[sources.subscriptions]
table = "Subscription"
customer = "userId"
price = "priceId"
status = "status"
"""
)


@pytest.fixture
def prisma(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute(PRISMA_SCHEMA)
    return conn


def add_user(conn: psycopg.Connection, user: str, email: str, **more: str) -> None:
    conn.execute(
        'INSERT INTO "User" (id, email, name, "timeZone") VALUES (%s, %s, %s, %s)',
        (user, email, more.get("name"), more.get("tz")),
    )


def subscribe(conn: psycopg.Connection, sub: str, user: str, price: str, status: str) -> None:
    conn.execute(
        'INSERT INTO "Subscription" (id, "userId", "priceId", status) VALUES (%s, %s, %s, %s)',
        (sub, user, price, status),
    )


def customer(conn: psycopg.Connection, user: str) -> tuple[object, ...] | None:
    return conn.execute(
        "SELECT plan, plan_source, email, name, timezone FROM skene.customers "
        "WHERE customer_id = %s",
        (user,),
    ).fetchone()


def test_users_become_customers_as_identify_would_make_them(
    prisma: psycopg.Connection, apply_toml: Apply
) -> None:
    add_user(prisma, "u_before", "before@example.com", name="Ada")
    apply_toml(SOURCES)
    assert customer(prisma, "u_before") == ("free", "default", "before@example.com", "Ada", None)
    add_user(prisma, "u_1", "ada@example.com", name="Ada Lovelace", tz="europe/berlin")
    assert customer(prisma, "u_1") == (
        "free",
        "default",
        "ada@example.com",
        "Ada Lovelace",
        "Europe/Berlin",
    )
    prisma.execute("UPDATE \"User\" SET email = 'ada@lovelace.dev' WHERE id = 'u_1'")
    assert customer(prisma, "u_1")[2] == "ada@lovelace.dev"  # type: ignore[index]


def test_values_identify_would_refuse_are_skipped_and_the_apps_insert_goes_through(
    prisma: psycopg.Connection, apply_toml: Apply
) -> None:
    apply_toml(SOURCES)
    add_user(prisma, "u_2", "not an address", name="Bob\nBobson", tz="Mars/Olympus")
    add_user(prisma, " padded ", "padded@example.com")
    assert scalar(prisma, 'SELECT count(*) FROM "User"') == 2
    assert customer(prisma, "u_2") == ("free", "default", None, None, None)
    assert customer(prisma, " padded ") is None


def test_the_plan_follows_the_subscriptions_table(
    prisma: psycopg.Connection, apply_toml: Apply
) -> None:
    apply_toml(SOURCES)
    add_user(prisma, "u_1", "ada@example.com")
    subscribe(prisma, "sub_old", "u_1", "price_pro_monthly", "canceled")
    assert customer(prisma, "u_1")[:2] == ("free", "default")  # type: ignore[index]
    subscribe(prisma, "sub_new", "u_1", "price_pro_monthly", "trialing")
    assert customer(prisma, "u_1")[:2] == ("pro", "app")  # type: ignore[index]
    prisma.execute("UPDATE \"Subscription\" SET status = 'active' WHERE id = 'sub_new'")
    prisma.execute("UPDATE \"Subscription\" SET status = 'past_due' WHERE id = 'sub_new'")
    assert customer(prisma, "u_1")[:2] == ("free", "app")  # type: ignore[index]
    prisma.execute("UPDATE \"Subscription\" SET status = 'active' WHERE id = 'sub_new'")
    prisma.execute("DELETE FROM \"Subscription\" WHERE id = 'sub_new'")
    assert customer(prisma, "u_1")[:2] == ("free", "app")  # type: ignore[index]
    changes = prisma.execute(
        "SELECT from_plan, to_plan, source FROM skene.plan_changes WHERE customer_id = 'u_1' "
        "ORDER BY id"
    ).fetchall()
    assert changes == [
        ("free", "pro", "app"),
        ("pro", "free", "app"),
        ("free", "pro", "app"),
        ("pro", "free", "app"),
    ]
    # a free -> paid change through the app's table is a conversion like any other
    assert scalar(prisma, "SELECT count(*) FROM skene.conversions WHERE source = 'app'") == 2


def test_an_unknown_price_is_no_plan_and_never_fails_the_apps_write(
    prisma: psycopg.Connection, apply_toml: Apply
) -> None:
    apply_toml(SOURCES)
    add_user(prisma, "u_1", "ada@example.com")
    subscribe(prisma, "sub_1", "u_1", "price_unknown", "active")
    assert customer(prisma, "u_1")[:2] == ("free", "default")  # type: ignore[index]


def test_plan_names_straight_from_a_plan_column(
    prisma: psycopg.Connection, apply_toml: Apply
) -> None:
    add_user(prisma, "u_1", "ada@example.com")
    prisma.execute(
        'INSERT INTO "Subscription" (id, "userId", plan, status) VALUES '
        "('sub_1', 'u_1', 'pro', 'active')"
    )
    apply_toml(SOURCES.replace('price = "priceId"', 'plan = "plan"'))
    assert customer(prisma, "u_1")[:2] == ("pro", "app")  # type: ignore[index]


def test_apply_checks_every_table_column_and_expression_with_its_line(
    prisma: psycopg.Connection, apply_toml: Apply
) -> None:
    broken = (
        SOURCES.replace('name = "name"', 'name = "fullName"')
        .replace('status = "status"', 'status = "(SELECT s FROM statuses)"')
        .replace('table = "Subscription"', 'table = "Subscription"')
    )
    with pytest.raises(ApplyRefused) as refused:
        apply_toml(
            broken + '\n[sources.events]\ntable = "Events"\ncustomer = "userId"\nat = "at"\n'
        )
    lines = str(refused.value).splitlines()
    assert lines[-1] == "nothing applied"
    assert any(
        ":12: sources.customers.name: 'fullName' does not work over a row of " in line
        and 'column "fullname" does not exist' in line
        for line in lines
    ), lines
    assert any(
        ":19: sources.subscriptions.status:" in line
        and 'relation "statuses" does not exist' in line
        and "qualify tables" in line
        for line in lines
    ), lines
    assert any(":22: sources.events.table: no table Events" in line for line in lines), lines
    assert scalar(prisma, "SELECT count(*) FROM skene.plans") == 0


def test_apply_twice_changes_nothing_and_prune_removes_the_triggers(
    prisma: psycopg.Connection, apply_toml: Apply
) -> None:
    first = apply_toml(SOURCES)
    assert [str(c) for c in first if c.kind == "source"] == [
        'create source customers: customers from public."User", backfilled',
        'create source subscriptions: plans from public."Subscription", backfilled',
    ]
    assert apply_toml(SOURCES) == []
    # named apart from skene.watch_activity's skene_activity, which may sit on a table too
    assert prisma.execute(
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE tgname LIKE 'skene%%' "
        "ORDER BY tgname"
    ).fetchall() == [
        ('"User"', "skene_source_customers"),
        ('"Subscription"', "skene_source_subscriptions"),
    ]
    changed = apply_toml(SOURCES.replace('name = "name"\n', ""))
    assert [str(c) for c in changed] == [
        'update source customers: changed name; customers from public."User", backfilled'
    ]
    with pytest.raises(ApplyRefused, match="no longer lists sources customers, subscriptions"):
        apply_toml(PLANS)
    apply_toml(PLANS, prune=True)
    assert (
        scalar(
            prisma, "SELECT string_agg(tgname, ', ') FROM pg_trigger WHERE tgname LIKE 'skene%%'"
        )
        is None
    )
    add_user(prisma, "u_9", "nine@example.com")
    assert customer(prisma, "u_9") is None


def test_activity_from_an_events_table_and_from_a_last_active_column(
    prisma: psycopg.Connection, apply_toml: Apply
) -> None:
    prisma.execute(
        'INSERT INTO "User" (id, email, "lastActiveAt") VALUES '
        "('u_1', 'a@example.com', '2026-01-02 09:00'), ('u_2', 'b@example.com', NULL)"
    )
    prisma.execute(
        'INSERT INTO "Event" ("userId", type, "createdAt") VALUES '
        "('u_2', 'login', '2026-01-03 10:00'), ('u_2', 'login', '2026-01-04 10:00')"
    )
    prisma.execute("SET TIME ZONE 'UTC'")
    apply_toml(
        SOURCES
        + '\n[sources.events]\ntable = "Event"\ncustomer = "userId"\nat = "createdAt"\n'
        + '\n[sources.activity]\ntable = "User"\ncustomer = "id"\ncolumn = "lastActiveAt"\n'
    )

    def last_active(user: str) -> str:
        found = scalar(
            prisma,
            "SELECT to_char(last_activity_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') "
            "FROM skene.customers WHERE customer_id = %s",
            (user,),
        )
        return str(found)

    assert (last_active("u_1"), last_active("u_2")) == ("2026-01-02 09:00", "2026-01-04 10:00")
    prisma.execute(
        'INSERT INTO "Event" ("userId", type, "createdAt") '
        "VALUES ('u_1', 'x', '2026-01-05 08:00')"
    )
    assert last_active("u_1") == "2026-01-05 08:00"
    prisma.execute("UPDATE \"User\" SET \"lastActiveAt\" = '2026-01-06 07:30' WHERE id = 'u_2'")
    assert last_active("u_2") == "2026-01-06 07:30"
    # an update of another column, or to NULL, is no activity
    prisma.execute("UPDATE \"User\" SET name = 'x', \"lastActiveAt\" = NULL WHERE id = 'u_2'")
    assert last_active("u_2") == "2026-01-06 07:30"
