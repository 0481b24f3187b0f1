"""The retention part of `skene-pg demo`: dormant customers (activity backdated), one
run of a retention loop, the re-engagement emails it queued, and a milestone."""

from __future__ import annotations

import click
from psycopg.types.json import Jsonb

from skene_pg import db
from skene_pg.cli.output import format_table
from skene_pg.report import print_retention

LOOP = "dormant_users_demo"
MILESTONE = "first_projects_demo"
CUSTOMERS = [  # id, name, days since last activity
    ("cus_demo_active", "Grace", 2),
    ("cus_demo_week", "Linus", 8),
    ("cus_demo_fortnight", "Barbara", 16),
    ("cus_demo_month", "Edsger", 40),
]


def show_retention(url: str) -> None:
    click.secho("7. retention: customers whose last activity was days ago", bold=True)
    with db.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO skene.loops (name, type, config) VALUES (%s, 'retention', %s) "
            "ON CONFLICT (name) DO NOTHING",
            (
                LOOP,
                Jsonb(
                    {
                        "schedule": "0 9 * * *",
                        "dormant_after": "7 days",
                        "template": "re_engagement",
                        "steps": [
                            {"after": "14 days", "template": "re_engagement"},
                            {"after": "30 days", "template": "re_engagement"},
                        ],
                        "holdout_percent": 0,
                        "quiet_hours": {"start": "00:00", "end": "00:00"},
                    }
                ),
            ),
        )
        conn.execute(
            "INSERT INTO skene.loops (name, type, config) VALUES (%s, 'milestone', %s) "
            "ON CONFLICT (name) DO NOTHING",
            (
                MILESTONE,
                Jsonb({"event": "project_created", "thresholds": [1, 3], "template": "milestone"}),
            ),
        )
        for customer, name, days in CUSTOMERS:
            conn.execute(
                "SELECT skene.identify(%s, email => %s, name => %s)",
                (customer, f"{name.lower()}@example.com", name),
            )
            conn.execute(
                "SELECT skene.track(%s, 'login', '{}', "
                "pg_catalog.now() - pg_catalog.make_interval(days => %s))",
                (customer, days),
            )
        rows = conn.execute(
            "SELECT customer_id, last_activity_at FROM skene.customers "
            "WHERE customer_id = ANY(%s) ORDER BY last_activity_at DESC",
            ([c for c, _, _ in CUSTOMERS],),
        ).fetchall()
        click.echo(format_table(["customer", "last_activity_at"], rows))

        click.secho(f"8. SELECT skene.run_loop('{LOOP}')  (pg_cron runs it daily)", bold=True)
        run = conn.execute(
            "SELECT state, candidates, queued, held_out FROM skene.run_loop(%s)", (LOOP,)
        ).fetchone()
        click.echo(format_table(["state", "candidates", "queued", "held_out"], [run or ()]))
        again = conn.execute("SELECT id, queued FROM skene.run_loop(%s)", (LOOP,)).fetchone()
        click.echo(
            f"   run again in the same minute: the slot ran already "
            f"(run {again[0] if again else '?'}, nothing new queued)"
        )
        jobs = conn.execute(
            "SELECT j.customer_id, j.payload ->> 'template', j.payload ->> 'step', j.run_at, "
            "       j.dedupe_key FROM skene.jobs j WHERE j.loop_name = %s ORDER BY j.id",
            (LOOP,),
        ).fetchall()
        click.echo(format_table(["customer", "template", "step", "run_at", "dedupe_key"], jobs))

        click.secho("9. a milestone: cus_demo_active creates 3 projects", bold=True)
        for _ in range(3):
            conn.execute("SELECT skene.track('cus_demo_active', 'project_created')")
        milestones = conn.execute(
            "SELECT m.customer_id, m.threshold, j.payload ->> 'template', j.dedupe_key "
            "FROM skene.milestones_reached m JOIN skene.jobs j ON j.id = m.job_id "
            "WHERE m.loop_name = %s ORDER BY m.threshold",
            (MILESTONE,),
        ).fetchall()
        click.echo(format_table(["customer", "threshold", "template", "dedupe_key"], milestones))

        click.secho("10. skene-pg report", bold=True)
        print_retention(conn)
