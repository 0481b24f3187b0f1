"""Retention benchmark: skene.track() against a bare INSERT into an events table, the
extra cost skene.watch_activity's trigger adds to an app's inserts, and what a milestone
loop on a feature adds to the gate (pgbench, 1 and 8 clients); then the daily dormant
scan over 1M customers (10% dormant).

Activity is measured two ways, because track() writes the customer row only when the
stored last activity is older than skene.activity_resolution() (1 minute):
- "in a session": each call's customer was active within the last minute (a pool of
  1,000 customers), the common shape of an app's event stream;
- "first in a minute": every customer was last active an hour ago (reset before each
  round; 1,000,000 customers), so nearly every call writes. The share of calls that
  wrote is printed, and a bare UPDATE of last_activity_at alone is measured the same
  way: the floor for any design that keeps last activity on a row per customer.

It starts its own durable cluster (fsync on) in a fresh folder under /tmp.

    python -m bench.track_bench             # about 10 minutes on 2 cores
    python -m bench.track_bench --quick     # shorter runs, 100k customers for the scan
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from skene_pg import migrations
from skene_pg.devdb import DevCluster

DBNAME = "skene_track_bench"
SESSION_CUSTOMERS = 1_000  # "in a session" and the gate pick from these
TRACK_TARGET = 1.3  # track() may cost at most this many bare inserts
SCAN_TARGET = 10.0  # seconds for the dormant scan over 1M customers

SETUP = """
INSERT INTO skene.plans (plan, is_default) VALUES ('free', true);
INSERT INTO skene.features (feature, period) VALUES ('calls', 'lifetime'),
  ('celebrated_calls', 'lifetime');
INSERT INTO skene.feature_limits (feature, plan, usage_limit) VALUES
  ('calls', 'free', NULL), ('celebrated_calls', 'free', NULL);
INSERT INTO skene.loops (name, type, config) VALUES ('dormant', 'retention',
  '{"schedule": "0 9 * * *", "dormant_after": "7 days", "template": "re_engagement",
    "steps": [{"after": "14 days", "template": "re_engagement"}]}');
INSERT INTO skene.loops (name, type, feature, config) VALUES ('calls', 'milestone',
  'celebrated_calls', '{"thresholds": [10, 100, 1000, 10000, 100000], "template": "milestone"}');
CREATE TABLE public.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL, event text NOT NULL, properties jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL);
CREATE TABLE public.watched_events (LIKE public.events INCLUDING ALL);
SELECT skene.watch_activity('public.watched_events', 'customer_id', 'occurred_at');
"""

# every customer last active an hour ago: the next activity of each must be written
RESET_ACTIVITY = (
    "UPDATE skene.customers SET last_activity_at = now() - interval '1 hour' "
    "WHERE last_activity_at > now() - interval '1 hour'"
)

INSERT = (
    "INSERT INTO public.events (customer_id, event, properties, occurred_at) "
    "VALUES ('c' || :c, 'login', '{}', now());"
)
WATCHED_INSERT = INSERT.replace("public.events", "public.watched_events")
TRACK = "SELECT skene.track('c' || :c, 'login', '{}');"


@dataclass(frozen=True)
class Workload:
    sql: str
    customers: int | None  # :c is random(1, customers); None: the whole population
    fresh_activity: bool = False  # reset everyone's last activity before each round


WORKLOADS = {
    "insert": Workload(INSERT, None),
    "track, in a session": Workload(TRACK, SESSION_CUSTOMERS),
    "track, first in a minute": Workload(TRACK, None, fresh_activity=True),
    # the floor for any write of last activity: the bare UPDATE of that one column
    "bare update, first in a minute": Workload(
        "UPDATE skene.customers SET last_activity_at = now() WHERE customer_id = 'c' || :c;",
        None,
        fresh_activity=True,
    ),
    "watched insert, in a session": Workload(WATCHED_INSERT, SESSION_CUSTOMERS),
    "watched insert, first in a minute": Workload(WATCHED_INSERT, None, True),
    "gate": Workload(
        "SELECT * FROM skene.check_and_increment('c' || :c, 'calls');", SESSION_CUSTOMERS
    ),
    "gate, feature with milestones": Workload(
        "SELECT * FROM skene.check_and_increment('c' || :c, 'celebrated_calls');",
        SESSION_CUSTOMERS,
    ),
}


@dataclass
class Sample:
    tps: float
    customer_writes_per_call: float


def customer_writes(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables "
        "WHERE relid = 'skene.customers'::regclass"
    ).fetchone()
    return int(row[0]) if row else 0


def pgbench(
    cluster: DevCluster,
    conn: psycopg.Connection,
    folder: Path,
    name: str,
    clients: int,
    seconds: int,
    population: int,
) -> Sample:
    workload = WORKLOADS[name]
    customers = workload.customers or population
    if workload.fresh_activity:
        # its own session: a backend publishes its table counters when it exits
        with psycopg.connect(conn.info.dsn, autocommit=True) as reset:
            reset.execute(RESET_ACTIVITY)
            reset.execute("VACUUM skene.customers")
        time.sleep(0.5)
    script = folder / (re.sub(r"\W+", "_", name) + ".sql")
    script.write_text(f"\\set c random(1, {customers})\n{workload.sql}\n")
    script.chmod(0o644)
    pgbench_bin = cluster.bindir / "pgbench"
    writes_before = customer_writes(conn)
    out = subprocess.run(
        [
            str(pgbench_bin) if pgbench_bin.exists() else "pgbench",
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "-c",
            str(clients),
            "-j",
            str(clients),
            "-T",
            str(seconds),
            "-M",
            "prepared",
            "-f",
            str(script),
            DBNAME,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    tps = re.search(r"tps = ([0-9.]+)", out.stdout)
    calls = re.search(r"number of transactions actually processed: ([0-9]+)", out.stdout)
    assert tps and calls, out.stdout + out.stderr
    time.sleep(0.5)  # pgbench's backends publish their table counters as they exit
    writes = customer_writes(conn) - writes_before
    return Sample(float(tps[1]), writes / max(int(calls[1]), 1))


def dormant_scan(conn: psycopg.Connection, customers: int) -> dict[str, float | int]:
    conn.execute("TRUNCATE skene.loop_sends, skene.loop_runs")
    conn.execute("DELETE FROM skene.jobs")
    conn.execute("DELETE FROM skene.customers")
    conn.execute(
        "INSERT INTO skene.customers (customer_id, plan, email, timezone, last_activity_at) "
        "SELECT 'd' || i, 'free', 'd' || i || '@example.com', "
        "       (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Tokyo'])[i %% 4 + 1], "
        "       now() - CASE WHEN i %% 10 = 0 THEN interval '8 days' ELSE interval '1 day' END "
        "  FROM generate_series(1, %s) i",
        (customers,),
    )
    conn.execute("VACUUM ANALYZE skene.customers")
    started = time.perf_counter()
    run = conn.execute(
        "SELECT state, candidates, queued, held_out, error FROM skene.run_loop('dormant')"
    ).fetchone()
    seconds = time.perf_counter() - started
    assert run is not None and run[0] == "succeeded", run
    jobs = conn.execute("SELECT count(*) FROM skene.jobs").fetchone()
    wrong = conn.execute(
        "SELECT count(*) FROM skene.loop_sends s JOIN skene.customers c USING (customer_id) "
        "WHERE c.last_activity_at > now() - interval '7 days'"
    ).fetchone()
    started = time.perf_counter()
    again = conn.execute(
        "SELECT queued FROM skene.run_loop('dormant', "
        "date_trunc('minute', now()) - interval '1 minute')"
    )
    again_row = again.fetchone()
    rerun = time.perf_counter() - started
    return {
        "customers": customers,
        "dormant": customers // 10,
        "queued": run[2],
        "held_out": run[3],
        "jobs": jobs[0] if jobs else 0,
        "wrongly_reached": wrong[0] if wrong else -1,
        "seconds": round(seconds, 2),
        "rerun_queued": again_row[0] if again_row else -1,
        "rerun_seconds": round(rerun, 2),
    }


def ratio(results: dict[str, dict[int, float]], name: str, baseline: str) -> dict[int, float]:
    """How many baseline calls one call of `name` costs (tps of baseline / tps of name)."""
    return {c: results[baseline][c] / results[name][c] for c in results[baseline]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds, rounds, customers = (3, 1, 100_000) if args.quick else (8, 3, 1_000_000)

    folder = Path(tempfile.mkdtemp(prefix="skene-track-bench-"))
    folder.chmod(0o755)
    cluster = DevCluster(folder / "cluster")
    cluster.start()
    try:
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DBNAME}")
        url = cluster.url(DBNAME)
        migrations.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SETUP)
            # steady state: customers exist (track updates, never registers)
            conn.execute(
                "INSERT INTO skene.customers (customer_id, plan, last_activity_at) "
                "SELECT 'c' || i, 'free', now() - interval '1 hour' "
                "FROM generate_series(1, %s) i",
                (customers,),
            )
            # gate counters exist and cache their limit (the fast path)
            conn.execute(
                "SELECT count(skene.check_and_increment('c' || i, f)) "
                "FROM generate_series(1, %s) i, (VALUES ('calls'), ('celebrated_calls')) v(f), "
                "generate_series(1, 2)",
                (SESSION_CUSTOMERS,),
            )
            conn.execute("VACUUM ANALYZE")
            samples: dict[str, dict[int, list[Sample]]] = {name: {} for name in WORKLOADS}
            for clients in (1, 8):
                for round_ in range(rounds):
                    order = list(WORKLOADS) if round_ % 2 == 0 else list(reversed(WORKLOADS))
                    for name in order:
                        sample = pgbench(cluster, conn, folder, name, clients, seconds, customers)
                        samples[name].setdefault(clients, []).append(sample)
        tps = {
            name: {c: statistics.median(s.tps for s in runs) for c, runs in by_clients.items()}
            for name, by_clients in samples.items()
        }
        writes = {
            name: statistics.median(s.customer_writes_per_call for s in by_clients[8])
            for name, by_clients in samples.items()
        }
        print("tps (median)                            1 client   8 clients   customer writes/call")
        for name, by_clients in tps.items():
            print(
                f"  {name:<36} {by_clients[1]:>9.0f}   {by_clients[8]:>9.0f}   {writes[name]:.3f}"
            )
        ratios = {
            "track, in a session": ratio(tps, "track, in a session", "insert"),
            "track, first in a minute": ratio(tps, "track, first in a minute", "insert"),
            "bare update, first in a minute": ratio(
                tps, "bare update, first in a minute", "insert"
            ),
            "watched insert, in a session": ratio(tps, "watched insert, in a session", "insert"),
            "watched insert, first in a minute": ratio(
                tps, "watched insert, first in a minute", "insert"
            ),
            "gate, feature with milestones": ratio(tps, "gate, feature with milestones", "gate"),
        }
        for name, by_clients in ratios.items():
            baseline = "the gate on a plain feature" if name.startswith("gate") else "a bare insert"
            goal = ""
            if name.startswith("track"):
                worst = max(by_clients.values())
                goal = f" (goal <= {TRACK_TARGET}x: {'ok' if worst <= TRACK_TARGET else 'OVER'})"
            print(
                f"  {name}: {by_clients[1]:.2f}x / {by_clients[8]:.2f}x {baseline} "
                f"at 1 / 8 clients{goal}"
            )
        with psycopg.connect(url, autocommit=True) as conn:
            scan = dormant_scan(conn, customers)
        verdict = "ok" if scan["seconds"] < SCAN_TARGET else "OVER TARGET"
        print(
            f"dormant scan: {scan['customers']:,} customers, {scan['dormant']:,} dormant -> "
            f"{scan['queued']:,} queued + {scan['held_out']:,} held out in {scan['seconds']} s "
            f"(target < {SCAN_TARGET} s: {verdict}); wrongly reached: {scan['wrongly_reached']}; "
            f"another slot's re-run queued {scan['rerun_queued']} in {scan['rerun_seconds']} s"
        )
        print(
            json.dumps(
                {"tps": tps, "customer_writes_per_call": writes, "ratios": ratios, "scan": scan}
            )
        )
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
