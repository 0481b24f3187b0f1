"""Guesses about an app's tables: which holds its users (Django's auth_user, Prisma's
"User", a Rails-style users), its subscriptions (dj-stripe, Prisma's "Subscription", a
plain subscriptions table), its events, a last-activity column, and the tables whose
rows a customer owns (count limits). Each guess carries the reason it was made."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg

from skene_pg.proposal.catalogue import Table, ident, sample

CUSTOMER_COLUMNS = ("user_id", "userId", "account_id", "accountId", "customer_id", "team_id")
OWNER_COLUMNS = ("owner_id", "ownerId", *CUSTOMER_COLUMNS, "created_by_id", "createdById")
ACTIVITY_COLUMNS = (
    "last_activity_at",
    "last_active_at",
    "lastActiveAt",
    "lastActivityAt",
    "last_seen_at",
    "lastSeenAt",
    "last_login",
    "last_login_at",
    "lastLoginAt",
)
TIME_COLUMNS = ("created_at", "createdAt", "occurred_at", "occurredAt", "timestamp", "at", "time")
# framework tables whose rows are no product usage
_FRAMEWORK = re.compile(
    r"^(django_|auth_|djstripe_|_prisma_migrations$|schema_migrations$|ar_internal_metadata$"
    r"|alembic_version$|knex_|sessions?$|Session$|Account$|VerificationToken$)"
)
_PLAN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass
class Source:
    kind: str
    table: Table
    values: dict[str, str]  # key -> column or SQL expression
    why: str


@dataclass
class Plan:
    name: str
    prices: list[str] = field(default_factory=list)
    why: str = ""


@dataclass
class Counted:
    table: Table
    customer: str
    why: str

    @property
    def feature(self) -> str:
        name = re.sub(r"[^A-Za-z0-9_]+", "_", self.table.name).strip("_").lower() or "rows"
        return name if name.endswith("s") else name + "s"


@dataclass
class Recognised:
    users: Table | None = None
    sources: list[Source] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    counted: list[Counted] = field(default_factory=list)

    def source(self, kind: str) -> Source | None:
        return next((s for s in self.sources if s.kind == kind), None)


def recognise(conn: psycopg.Connection, tables: dict[tuple[str, str], Table]) -> Recognised:
    found = Recognised()
    users = _users(tables)
    if users is not None:
        found.users, why = users
        found.sources.append(_customers(users[0], why))
        activity = users[0].column(*ACTIVITY_COLUMNS)
        if activity:
            found.sources.append(
                Source(
                    "activity",
                    users[0],
                    {"customer": _id(users[0]), "column": activity},
                    f"{users[0].file_name}.{activity} looks like the time a user was last active",
                )
            )
    subscriptions = _subscriptions(conn, tables, found.users)
    if subscriptions is not None:
        found.sources.append(subscriptions[0])
        found.plans = subscriptions[1]
    events = _events(tables)
    if events is not None:
        found.sources.append(events)
    taken = {(s.table.schema, s.table.name) for s in found.sources}
    found.counted = _counted(tables, found.users, taken)
    return found


def _id(table: Table) -> str:
    return table.column("id", "uuid", "pk") or next(iter(table.columns))


def _users(tables: dict[tuple[str, str], Table]) -> tuple[Table, str] | None:
    for (schema, name), table in tables.items():
        if name == "auth_user" and table.column("email"):
            return table, f"{schema}.auth_user is Django's user table (django.contrib.auth)"
    for table in tables.values():
        if {"password", "last_login", "is_superuser"} <= set(table.columns) and table.column(
            "email"
        ):
            return table, f"{table.file_name} looks like a custom Django user model"
    for table in tables.values():
        if table.name == "User" and table.column("email"):
            return table, '"User" with an email column is the user model of a Prisma schema'
    for table in tables.values():
        if table.name == "users" and table.column("email"):
            return table, f"{table.file_name} with an email column: a Rails-style users table"
    for table in tables.values():
        if table.name.lower() in ("user", "accounts", "account", "members") and table.column(
            "email"
        ):
            return table, f"{table.file_name} has an email column and a user-like name"
    return None


def _customers(users: Table, why: str) -> Source:
    values = {"id": _id(users)}
    email = users.column("email", "email_address")
    if email:
        values["email"] = email
    if users.column("first_name") and users.column("last_name"):
        values["name"] = "nullif(btrim(first_name || ' ' || last_name), '')"
    else:
        name = users.column("name", "full_name", "fullName", "display_name", "displayName")
        if name:
            values["name"] = name
    zone = users.column("timezone", "time_zone", "timeZone", "tz")
    if zone:
        values["timezone"] = zone
    return Source("customers", users, values, why)


def _subscriptions(
    conn: psycopg.Connection, tables: dict[tuple[str, str], Table], users: Table | None
) -> tuple[Source, list[Plan]] | None:
    for (schema, name), table in tables.items():
        linked = tables.get((schema, "djstripe_customer"))
        if name == "djstripe_subscription" and linked and linked.column("subscriber_id"):
            djstripe_price = (
                "coalesce(stripe_data #>> '{items,data,0,price,id}', stripe_data #>> '{plan,id}')"
            )
            source = Source(
                "subscriptions",
                table,
                {
                    "customer": (
                        f"(SELECT c.subscriber_id FROM {ident(schema)}.djstripe_customer c "
                        "WHERE c.id = djstripe_subscription.customer_id)"
                    ),
                    "price": djstripe_price,
                    "status": "stripe_data ->> 'status'",
                },
                "dj-stripe keeps Stripe subscriptions in djstripe_subscription (stripe_data "
                "holds status and price); djstripe_customer.subscriber_id is the app's user",
            )
            prices = sorted(
                set(sample(conn, table, djstripe_price)) | _djstripe_prices(conn, tables, schema)
            )
            return source, _plans_from_prices(prices)
    for table in tables.values():
        if table.name not in ("Subscription", "subscriptions", "subscription"):
            continue
        owner = table.column(*CUSTOMER_COLUMNS)
        status = table.column("status", "state")
        price = table.column("priceId", "price_id", "stripe_price_id", "stripePriceId")
        plan = table.column("plan", "plan_name", "planName", "tier")
        if not (owner and status and (price or plan)):
            continue
        kind = "Prisma" if table.name == "Subscription" else "plain"
        values: dict[str, str] = {"customer": owner, "status": status}
        if price:
            values["price"] = price
            plans = _plans_from_prices(sample(conn, table, ident(price)))
        else:
            assert plan is not None
            values["plan"] = plan
            plans = [
                Plan(v, [], f"a value of {table.file_name}.{plan}")
                for v in sample(conn, table, ident(plan))
                if _PLAN_NAME.fullmatch(v)
            ]
        why = (
            f"{table.file_name} ({kind}) has a customer ({owner}), a status and "
            f"{'a price' if price else 'a plan'} column"
        )
        return Source("subscriptions", table, values, why), plans
    return None


def _djstripe_prices(
    conn: psycopg.Connection, tables: dict[tuple[str, str], Table], schema: str
) -> set[str]:
    prices = tables.get((schema, "djstripe_price"))
    return set(sample(conn, prices, "id")) if prices else set()


def _plans_from_prices(prices: list[str]) -> list[Plan]:
    plans = []
    for index, price in enumerate(prices, start=1):
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", price.removeprefix("price_")).strip("_.-")
        # a readable id (price_pro_monthly) names its plan; Stripe's random ids do not
        readable = _PLAN_NAME.fullmatch(stem) and sum(ch.isdigit() for ch in stem) <= 4
        name = stem if readable else f"paid_{index}"
        plans.append(Plan(name, [price], f"subscriptions use the price {price}"))
    return plans


def _events(tables: dict[tuple[str, str], Table]) -> Source | None:
    for table in tables.values():
        lowered = table.name.lower()
        if not (
            lowered in ("events", "event", "activities", "activity") or lowered.endswith("_events")
        ):
            continue
        customer = table.column(*CUSTOMER_COLUMNS)
        at = table.column(*TIME_COLUMNS)
        if customer and at:
            return Source(
                "events",
                table,
                {"customer": customer, "at": at},
                f"{table.file_name} looks like an events table: each row is a user's activity",
            )
    return None


def _counted(
    tables: dict[tuple[str, str], Table], users: Table | None, taken: set[tuple[str, str]]
) -> list[Counted]:
    found = []
    for key, table in tables.items():
        if key in taken or _FRAMEWORK.match(table.name) or table is users:
            continue
        owner = None
        if users is not None:
            owner = next(
                (
                    column
                    for column, ref in table.references.items()
                    if ref == (users.schema, users.name) and column in OWNER_COLUMNS
                ),
                None,
            ) or next(
                (c for c, ref in table.references.items() if ref == (users.schema, users.name)),
                None,
            )
            if owner is None and not table.references:  # Rails-style: no foreign keys
                owner = table.column(*OWNER_COLUMNS)
        if owner is None:
            continue
        why = f"{table.file_name}.{owner} references {users.file_name if users else 'the users'}"
        found.append(Counted(table, owner, why))
    return found[:3]
