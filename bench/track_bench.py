"""Retention benchmark: skene.track() against a bare INSERT into an events table, the
extra cost skene.watch_activity's trigger adds to an app's inserts (pgbench, 1 and 8
clients), and the daily dormant scan over 1M customers (10% dormant).

It starts its own durable cluster (fsync on) in a fresh folder under /tmp.

    python -m bench.track_bench             # about 2 minutes on 2 cores
    python -m bench.track_bench --quick     # smaller: 100k customers, shorter runs
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
from pathlib import Path

import psycopg

from skene_pg import migrations
from skene_pg.devdb import DevCluster

DBNAME = "skene_track_bench"
CUSTOMERS = 100_000  # the pool track() and the inserts pick from
TRACK_TARGET = 1.3  # track() may cost at most this many bare inserts
SCAN_TARGET = 10.0  # seconds for the dormant scan over 1M customers

SETUP = """
INSERT INTO skene.plans (plan, is_default) VALUES ('free', true);
INSERT INTO skene.loops (name, type, config) VALUES ('dormant', 'retention',
  '{"schedule": "0 9 * * *", "dormant_after": "7 days", "template": "re_engagement",
    "steps": [{"after": "14 days", "template": "re_engagement"}]}');
CREATE TABLE public.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL, event text NOT NULL, properties jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL);
CREATE TABLE public.watched_events (LIKE public.events INCLUDING ALL);
SELECT skene.watch_activity('public.watched_events', 'customer_id', 'occurred_at');
"""

SCRIPTS = {
    "insert": "INSERT INTO public.events (customer_id, event, properties, occurred_at) "
    "VALUES ('c' || :c, 'login', '{}', now());",
    "track": "SELECT skene.track('c' || :c, 'login', '{}');",
    "watched insert": "INSERT INTO public.watched_events (customer_id, event, properties, "
    "occurred_at) VALUES ('c' || :c, 'login', '{}', now());",
}


def pgbench(cluster: DevCluster, folder: Path, name: str, clients: int, seconds: int) -> float:
    script = folder / (name.replace(" ", "_") + ".sql")
    script.write_text(f"\\set c random(1, {CUSTOMERS})\n{SCRIPTS[name]}\n")
    script.chmod(0o644)
    out = subprocess.run(
        [
            str(cluster.bindir / "pgbench") if (cluster.bindir / "pgbench").exists() else "pgbench",
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
    found = re.search(r"tps = ([0-9.]+)", out.stdout)
    assert found, out.stdout + out.stderr
    return float(found[1])


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
        "SELECT queued FROM skene.run_loop('dormant', now() + interval '1 minute')"
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
                "SELECT skene.track('c' || i, 'login', '{}', now() - interval '1 hour') "
                "FROM generate_series(1, %s) i",
                (CUSTOMERS,),
            )
            conn.execute("VACUUM ANALYZE")
        results: dict[str, dict[int, float]] = {}
        for clients in (1, 8):
            samples: dict[str, list[float]] = {name: [] for name in SCRIPTS}
            for round_ in range(rounds):
                order = list(SCRIPTS) if round_ % 2 == 0 else list(reversed(SCRIPTS))
                for name in order:
                    samples[name].append(pgbench(cluster, folder, name, clients, seconds))
            for name, values in samples.items():
                results.setdefault(name, {})[clients] = statistics.median(values)
        print("throughput (tps, median)      1 client    8 clients")
        for name, by_clients in results.items():
            print(f"  {name:<26} {by_clients[1]:>9.0f}    {by_clients[8]:>9.0f}")
        ratios = {
            clients: results["insert"][clients] / results["track"][clients] for clients in (1, 8)
        }
        trigger = {
            clients: results["insert"][clients] / results["watched insert"][clients]
            for clients in (1, 8)
        }
        for clients in (1, 8):
            verdict = "ok" if ratios[clients] <= TRACK_TARGET else "OVER TARGET"
            print(
                f"  {clients} client(s): track() costs {ratios[clients]:.2f}x a bare insert "
                f"(target <= {TRACK_TARGET}x: {verdict}); the watch trigger makes an insert "
                f"cost {trigger[clients]:.2f}x"
            )
        with psycopg.connect(url, autocommit=True) as conn:
            scan = dormant_scan(conn, customers)
        verdict = "ok" if scan["seconds"] < SCAN_TARGET else "OVER TARGET"
        print(
            f"dormant scan: {scan['customers']:,} customers, {scan['dormant']:,} dormant -> "
            f"{scan['queued']:,} queued + {scan['held_out']:,} held out in {scan['seconds']} s "
            f"(target < {SCAN_TARGET} s: {verdict}); wrongly reached: {scan['wrongly_reached']}; "
            f"next slot re-run queued {scan['rerun_queued']} in {scan['rerun_seconds']} s"
        )
        print(
            json.dumps(
                {
                    "throughput": results,
                    "track_ratio": ratios,
                    "trigger_ratio": trigger,
                    "scan": scan,
                }
            )
        )
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
