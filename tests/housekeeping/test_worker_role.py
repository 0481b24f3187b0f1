"""Housekeeping runs as skene_worker, the role `skene-pg listen` connects with: the
functions run with the owner's rights; the role still cannot delete anything itself,
and an application role cannot call them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from skene_pg import housekeeping
from skene_pg.billing import registry as billing
from skene_pg.jobs.periodic import DAY, claim

pytestmark = pytest.mark.usefixtures("catalogue")


@pytest.fixture
def login_role(conn: psycopg.Connection) -> Iterator[Callable[[str], str]]:
    """Makes LOGIN roles in a skene role; dropped afterwards (roles are cluster-wide)."""
    made: list[str] = []

    def _make(member_of: str) -> str:
        name = f"hk_{uuid.uuid4().hex[:10]}"
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                sql.Identifier(name), sql.Identifier(member_of)
            )
        )
        made.append(name)
        return name

    yield _make
    for name in made:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_the_worker_role_housekeeps_and_claims(
    conn: psycopg.Connection, db_url: str, login_role: Callable[[str], str]
) -> None:
    # a worker's session reads the real clock: the old rows are old by it
    conn.execute("RESET skene.now")
    for n in range(3):
        conn.execute("SELECT skene.enqueue('test', '{}', NULL, NULL, %s, NULL, 1)", (f"j{n}",))
    conn.execute("SELECT skene.claim_jobs('w', 10)")
    conn.execute(
        "UPDATE skene.jobs SET state = 'succeeded', finished_at = now() - interval '40 days'"
    )
    conn.execute("UPDATE skene.job_attempts SET outcome = 'succeeded'")
    conn.execute("SELECT skene.link_billing_customer('ada', 'stripe', 'cus_A')")

    with psycopg.connect(db_url, user=login_role("skene_worker"), autocommit=True) as worker:
        result = housekeeping.housekeep(worker)
        assert (result.deleted["jobs"], result.deleted["job_attempts"]) == (3, 3)
        assert claim(worker, "housekeeping", DAY)
        (reconcile,) = billing.periodic_tasks("sk_test_key")
        assert reconcile.run(worker) == (1, 1)  # queued, linked
        assert worker.execute("SELECT keep_finished FROM skene.housekeeping_settings").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker.execute("DELETE FROM skene.jobs")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker.execute("UPDATE skene.periodic_runs SET last_run_at = now()")
    assert conn.execute("SELECT count(*) FROM skene.jobs").fetchone() == (1,)  # the sync


def test_the_same_under_set_role(conn: psycopg.Connection) -> None:
    conn.execute("SELECT skene.enqueue('test', '{}')")
    conn.execute("SELECT skene.cancel_job(id) FROM skene.jobs")
    conn.execute("SET skene.now = '2027-01-01 00:00:00+00'")  # honoured: a superuser's session
    conn.execute("SET ROLE skene_worker")
    try:
        assert housekeeping.housekeep(conn).deleted["jobs"] == 1
    finally:
        conn.execute("RESET ROLE")


def test_an_application_role_cannot_housekeep_or_claim(
    db_url: str, login_role: Callable[[str], str]
) -> None:
    with psycopg.connect(db_url, user=login_role("skene_app"), autocommit=True) as app:
        for call in (
            "SELECT * FROM skene.housekeep()",
            "SELECT skene.claim_periodic('housekeeping', '1 day')",
            "SELECT skene.release_periodic('housekeeping')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(call)
