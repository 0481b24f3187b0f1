"""One role per trust level: skene_app (the application's request path), skene_billing
(whatever changes plans) and skene_worker (what `skene-pg listen` calls), and the
function x role table of docs/security.md, checked against the catalogue."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from tests.sql.helpers import check_and_increment, scalar, set_now

pytestmark = pytest.mark.usefixtures("catalogue")

Login = Callable[[str], psycopg.Connection]

ROLES = ("skene_app", "skene_billing", "skene_worker")
SECURITY_MD = Path(__file__).resolve().parents[2] / "docs" / "security.md"

# The event an attacker holding skene_app would hand over: "the victim's Stripe
# customer paid, and is me". Verified webhooks come in through skene_billing only.
FORGED_EVENT = {
    "type": "checkout.session.completed",
    "data": {"object": {"customer": "cus_VICTIM", "client_reference_id": "attacker"}},
}


def billing_state(conn: psycopg.Connection) -> tuple[Any, ...]:
    """Everything a plan change, a link or an ingested event would touch."""
    return (
        conn.execute(
            "SELECT customer_id, plan, plan_source, billing_period_start, billing_period_end "
            "FROM skene.customers ORDER BY 1"
        ).fetchall(),
        *(
            scalar(conn, f"SELECT count(*) FROM skene.{table}")
            for table in ("plan_changes", "billing_events", "billing_customers", "jobs")
        ),
    )


def test_the_app_can_neither_change_plans_nor_forge_billing_events(
    conn: psycopg.Connection, login_as: Login
) -> None:
    app = login_as("skene_app")
    check_and_increment(app, "attacker", "api_calls")
    before = billing_state(conn)
    assert before[0] == [("attacker", "free", "default", None, None)]
    for statement, params in (
        ("SELECT skene.ingest_billing_event('stripe', %s)", (Jsonb(FORGED_EVENT),)),
        ("SELECT skene.ingest_billing_event('stripe', %s)", (Jsonb({**FORGED_EVENT, "id": "e"}),)),
        ("SELECT skene.set_plan('attacker', 'pro')", ()),
        ("SELECT skene.set_plan('attacker', 'team', 'stripe', 'sub_fake')", ()),
        ("SELECT skene.link_billing_customer('attacker', 'stripe', 'cus_VICTIM')", ()),
        (
            "SELECT skene.set_billing_period('attacker', now() - interval '1 day', "
            "now() + interval '100 years')",
            (),
        ),
    ):
        with pytest.raises(errors.InsufficientPrivilege) as denied:
            app.execute(statement, params)
        assert denied.value.sqlstate == "42501"
    assert billing_state(conn) == before
    assert check_and_increment(app, "attacker", "api_calls")["plan"] == "free"


def test_the_billing_role_changes_plans_and_takes_verified_events(
    conn: psycopg.Connection, login_as: Login
) -> None:
    billing = login_as("skene_billing")
    billing.execute("SELECT skene.set_plan('acme', 'pro', 'stripe', 'sub_1')")
    billing.execute(
        "SELECT skene.set_billing_period('acme', '2026-03-05 00:00+00', '2026-04-05 00:00+00')"
    )
    billing.execute("SELECT skene.link_billing_customer('acme', 'stripe', 'cus_A')")
    event = {
        "id": "evt_1",
        "type": "customer.subscription.updated",
        "data": {"object": {"customer": "cus_A"}},
    }
    assert billing.execute(
        "SELECT skene.ingest_billing_event('stripe', %s)", (Jsonb(event),)
    ).fetchone() == (True,)
    assert conn.execute(
        "SELECT plan, plan_source, billing_period_start::text FROM skene.customers"
    ).fetchall() == [("pro", "stripe", "2026-03-05 00:00:00+00")]
    assert conn.execute(
        "SELECT kind, customer_id, payload ->> 'event_id' FROM skene.jobs"
    ).fetchall() == [("stripe_sync", "acme", "evt_1")]
    # and nothing of the request path or the worker's
    for call in (
        "skene.check_and_increment('acme', 'api_calls')",
        "skene.identify('acme')",
        "skene.track('acme', 'login')",
        "skene.set_limit_override('acme', 'api_calls', NULL)",
        "skene.enqueue('email', '{}')",
        "skene.claim_jobs('me')",
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            billing.execute(f"SELECT {call}")
    with pytest.raises(errors.InsufficientPrivilege):
        billing.execute("SELECT * FROM skene.customers")


def test_the_worker_suppresses_and_prunes(conn: psycopg.Connection, login_as: Login) -> None:
    """skene.prune and skene.suppress run with the owner's rights: the worker holds no
    write grant on skene's tables."""
    worker = login_as("skene_worker")
    # A key counted in January 2020 expired on 1 February 2020: before the worker's
    # clock, which is the real one.
    set_now(conn, "2020-01-10 12:00:00")
    check_and_increment(conn, "acme", "api_calls", key="k1")
    check_and_increment(conn, "acme", "seats", key="k2")  # lifetime: never expires
    assert worker.execute("SELECT skene.prune()").fetchone() == (1,)
    assert conn.execute("SELECT idempotency_key FROM skene.idempotency_keys").fetchall() == [
        ("k2",)
    ]
    worker.execute("SELECT skene.suppress(' Ada@Example.com ', 'bounce', 'resend')")
    assert conn.execute("SELECT email, reason, source FROM skene.suppressions").fetchall() == [
        ("ada@example.com", "bounce", "resend")
    ]
    # the webhook server's other call
    event = {"id": "evt_w", "type": "invoice.paid", "data": {"object": {"customer": "cus_W"}}}
    assert worker.execute(
        "SELECT skene.ingest_billing_event('stripe', %s)", (Jsonb(event),)
    ).fetchone() == (True,)
    with pytest.raises(errors.InsufficientPrivilege):
        worker.execute("DELETE FROM skene.idempotency_keys")


def test_the_worker_executes_what_skene_pg_listen_calls_and_no_plan_or_gate_function(
    conn: psycopg.Connection,
) -> None:
    """Every skene function the worker's code calls (skene_pg/queue.py, billing/queries.py,
    retention/): the Stripe sync applies plans through apply_stripe_subscription (owner's
    rights, plans that a configured price maps to), never through set_plan."""
    listen_calls = {
        "claim_jobs",
        "extend_lease",
        "finish_job",
        "reap_expired_leases",
        "retention_send_after",
        "retention_turn",
        "run_loop",
        "retention_report",
        "apply_stripe_subscription",
        "pin_meter_reports",
        "record_meter_report",
        "enqueue_billing_reconcile",
        "ingest_billing_event",
        "link_billing_customer",
        "enqueue",
        "suppress",
        "prune",
        "now",
    }
    table = catalogue_table(conn)
    assert {name for name in listen_calls if not table[name][2]} == set()
    for name in ("set_plan", "set_billing_period", "check", "check_and_increment", "track"):
        assert not table[name][2], name


def test_the_billing_role_may_use_the_schema(conn: psycopg.Connection) -> None:
    for role in ROLES:
        assert scalar(conn, "SELECT has_schema_privilege(%s, 'skene', 'USAGE')", (role,))
        assert not scalar(conn, "SELECT has_schema_privilege(%s, 'skene', 'CREATE')", (role,))
    assert scalar(conn, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'skene_billing'") is False


# ---------------------------------------------------------------------------------
# docs/security.md: the function x role table
# ---------------------------------------------------------------------------------


def catalogue_table(conn: psycopg.Connection) -> dict[str, tuple[bool, bool, bool]]:
    """For every function in schema skene: may skene_app, skene_billing, skene_worker
    execute it (directly or through a role they are members of)."""
    rows = conn.execute(
        """
        SELECT p.proname,
               has_function_privilege('skene_app', p.oid, 'EXECUTE'),
               has_function_privilege('skene_billing', p.oid, 'EXECUTE'),
               has_function_privilege('skene_worker', p.oid, 'EXECUTE')
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'skene'
         ORDER BY p.proname"""
    ).fetchall()
    names = [row[0] for row in rows]
    assert len(names) == len(set(names)), "overloaded skene functions: name the table by signature"
    return {name: (app, billing, worker) for name, app, billing, worker in rows}


ROW = re.compile(r"^\|\s*`skene\.(\w+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*$")


def doc_table() -> dict[str, tuple[bool, bool, bool]]:
    """The table between the function-roles markers of docs/security.md; a cell is
    allowed when it holds the check mark."""
    text = SECURITY_MD.read_text()
    start, end = "<!-- function-roles:start -->", "<!-- function-roles:end -->"
    assert start in text and end in text, f"{SECURITY_MD} lost its table markers"
    table: dict[str, tuple[bool, bool, bool]] = {}
    for line in text.split(start, 1)[1].split(end, 1)[0].splitlines():
        match = ROW.match(line)
        if match:
            name, *cells = match.groups()
            assert name not in table, f"skene.{name} is listed twice"
            flags = tuple(cell.strip() == "✓" for cell in cells)
            table[name] = (flags[0], flags[1], flags[2])
    return table


def render(table: dict[str, tuple[bool, bool, bool]]) -> str:
    lines = ["| function | skene_app | skene_billing | skene_worker |", "|---|:-:|:-:|:-:|"]
    for name, flags in sorted(table.items()):
        cells = " | ".join("✓" if flag else " " for flag in flags)
        lines.append(f"| `skene.{name}` | {cells} |")
    return "\n".join(lines)


def describe(flags: tuple[bool, bool, bool] | None, missing: str) -> str:
    if flags is None:
        return missing
    allowed = [role for role, flag in zip(ROLES, flags, strict=True) if flag]
    return ", ".join(allowed) or "owner only"


def test_the_security_docs_function_role_table_matches_the_catalogue(
    conn: psycopg.Connection,
) -> None:
    actual, documented = catalogue_table(conn), doc_table()
    diff = [
        f"skene.{name}: the database says {describe(actual.get(name), 'no such function')}, "
        f"the doc says {describe(documented.get(name), 'nothing (not listed)')}"
        for name in sorted(actual.keys() | documented.keys())
        if actual.get(name) != documented.get(name)
    ]
    if diff:
        pytest.fail(
            "docs/security.md's function x role table differs from the catalogue:\n  "
            + "\n  ".join(diff)
            + "\n\nThe table as the catalogue has it:\n"
            + render(actual),
            pytrace=False,
        )
