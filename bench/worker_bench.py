"""Worker benchmark: emails/s drained by one worker to a loopback fake
Resend API with the client-side rate limit off (goal >= 500/s, no duplicate, no loss),
and the latency from a blocking `check_and_increment` to the email request arriving
(goal p50 < 100 ms: NOTIFY-driven, not poll-driven).

The fake Resend runs in its own process (tests/worker/fake_resend.py), so it does not
share the worker's interpreter lock; the worker is the real one (skene_pg.jobs.worker) with
the real `resend` SDK.

    python -m bench.worker_bench              # its own durable cluster under /tmp
    python -m bench.worker_bench --quick      # fewer emails
    main(["--database-url", URL])             # from bench/run.py, on its database
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from skene_pg import db, migrations
from skene_pg.devdb import DevCluster
from skene_pg.email.handler import EmailHandler, EmailSettings
from skene_pg.email.resend import ResendProvider
from skene_pg.email.templates import TemplateRenderer
from skene_pg.jobs.worker import Worker, WorkerSettings

REPO = Path(__file__).resolve().parents[1]
DBNAME = "skene_worker_bench"
LIMIT = 3
THROUGHPUT_GOAL = 500.0  # emails/s
LATENCY_GOAL_MS = 100.0  # p50
CATALOGUE = f"""
INSERT INTO skene.plans (plan, paid, is_default) VALUES ('free', false, true), ('pro', true, false);
INSERT INTO skene.features (feature, period) VALUES ('api_calls', 'month');
INSERT INTO skene.feature_limits (feature, plan, usage_limit) VALUES
    ('api_calls', 'free', {LIMIT}), ('api_calls', 'pro', NULL);
INSERT INTO skene.loops (name, type, feature, config) VALUES
    ('free_tier_limit', 'freemium', 'api_calls',
     '{{"message": "Upgrade to continue.", "recovery": {{"retries": 2}}}}');
"""


@contextmanager
def fake_resend() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.worker.fake_resend"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def fake_state(url: str, since: int = 0) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_test/state?since={since}", timeout=10) as resp:
        return json.loads(resp.read())


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """A fresh database on `url`'s server, or on a durable cluster of our own."""
    directory = None
    cluster = None
    if url is None:
        directory = Path(tempfile.mkdtemp(prefix="skene-worker-bench-"))
        directory.chmod(0o755)
        cluster = DevCluster(directory / "cluster")  # durable: fsync on
        url = cluster.url("postgres")
        cluster.start()
    admin = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    target = psycopg.conninfo.make_conninfo(url, dbname=DBNAME)
    with db.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DBNAME))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DBNAME)))
    try:
        migrations.upgrade(target)
        with db.connect(target, autocommit=True) as conn:
            conn.execute(CATALOGUE)
        yield target
    finally:
        with db.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DBNAME))
            )
        if cluster is not None:
            cluster.stop()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def make_worker(url: str, api_url: str, *, drain: bool, concurrency: int) -> Worker:
    provider = ResendProvider("re_bench", api_url=api_url, timeout=10, rate_limit=0)
    handler = EmailHandler(
        provider,
        TemplateRenderer(),
        EmailSettings(
            sender="Bench <bench@example.test>",
            app_url="https://app.example.test",
            unsubscribe_secret="bench",
        ),
    )
    return Worker(url, [handler], WorkerSettings(concurrency=concurrency, drain=drain))


def throughput(url: str, api_url: str, emails: int, concurrency: int) -> dict[str, Any]:
    with db.connect(url, autocommit=True) as conn:
        ids = [f"tp_{i}" for i in range(emails)]
        conn.execute(
            "SELECT skene.identify(c, email => c || '@example.test', name => c) "
            "FROM unnest(%s::text[]) AS c",
            (ids,),
        )
        conn.execute(
            "SELECT skene.enqueue('email', jsonb_build_object('template', 'upgrade_prompt',"
            " 'feature', 'api_calls', 'reason', 'limit_reached', 'plan', 'free', 'used', 3,"
            " 'usage_limit', 3, 'resets_at', '2030-01-01T00:00:00+00:00'), c,"
            " 'free_tier_limit', 'tp:' || c) FROM unnest(%s::text[]) AS c",
            (ids,),
        )
        worker = make_worker(url, api_url, drain=True, concurrency=concurrency)
        started = time.perf_counter()
        stats = worker.run()
        elapsed = time.perf_counter() - started
        succeeded = conn.execute(
            "SELECT count(*) FROM skene.jobs WHERE state = 'succeeded'"
        ).fetchone()
    state = fake_state(api_url)
    keys = Counter(d["key"] for d in state["deliveries"])
    requests = len(state["received"])
    return {
        "emails": emails,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "emails_per_s": round(emails / elapsed, 1),
        "requests": requests,
        "delivered": len(keys),
        "duplicates": sum(n - 1 for n in keys.values()),
        "lost": emails - len(keys),
        "succeeded": succeeded[0] if succeeded else 0,
        "worker_stats": stats.as_dict(),
    }


def latency(url: str, api_url: str, samples: int) -> dict[str, Any]:
    """A customer blocked, then time until its email request reached the fake API."""
    worker = make_worker(url, api_url, drain=False, concurrency=8)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    seen = len(fake_state(api_url)["received"])
    results: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while not worker.listening.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        with db.connect(url, autocommit=True) as conn:
            for i in range(samples):
                customer = f"lat_{i}"
                conn.execute(
                    "SELECT skene.identify(%s, email => %s)", (customer, f"{customer}@example.test")
                )
                for _ in range(LIMIT):
                    conn.execute("SELECT skene.check_and_increment(%s, 'api_calls')", (customer,))
                row = conn.execute(
                    "SELECT allowed FROM skene.check_and_increment(%s, 'api_calls')", (customer,)
                ).fetchone()
                blocked_at = time.time()  # committed: autocommit
                assert row is not None and row[0] is False
                arrived = None
                deadline = time.monotonic() + 15
                while arrived is None and time.monotonic() < deadline:
                    new = fake_state(api_url, seen)["received"]
                    for request in new:
                        if request["to"] and customer + "@" in request["to"][0]:
                            arrived = request["at"]
                    seen += len(new)
                    if arrived is None:
                        time.sleep(0.002)
                if arrived is None:
                    raise RuntimeError(f"no email request for {customer} within 15 s")
                results.append((arrived - blocked_at) * 1000)
    finally:
        worker.stop()
        thread.join(timeout=30)
    ordered = sorted(results)
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max_ms": round(ordered[-1], 1),
        "poll_interval_s": worker.settings.poll_interval,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        help="a server to use (a database "
        f"{DBNAME} is created and dropped); default: a cluster of our own",
    )
    parser.add_argument("--quick", action="store_true", help="fewer emails and samples")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    emails, samples = (1000, 30) if args.quick else (5000, 100)
    with database(args.database_url) as url, fake_resend() as api_url:
        tp = throughput(url, api_url, emails, args.concurrency)
        lat = latency(url, api_url, samples)
    ok_tp = tp["emails_per_s"] >= THROUGHPUT_GOAL and tp["duplicates"] == 0 and tp["lost"] == 0
    ok_lat = lat["p50_ms"] < LATENCY_GOAL_MS
    print("worker: one `skene-pg listen`, rate limit off, loopback fake Resend")
    print(
        f"  throughput  {tp['emails_per_s']:>8.1f} emails/s  ({tp['emails']} emails in "
        f"{tp['seconds']} s, concurrency {tp['concurrency']}; duplicates {tp['duplicates']}, "
        f"lost {tp['lost']})  goal >= {THROUGHPUT_GOAL:.0f}/s: {'met' if ok_tp else 'MISSED'}"
    )
    print(
        f"  latency     p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, max {lat['max_ms']} ms "
        f"({lat['samples']} blocks; poll every {lat['poll_interval_s']} s)  goal p50 < "
        f"{LATENCY_GOAL_MS:.0f} ms: {'met' if ok_lat else 'MISSED'}"
    )
    assert tp["duplicates"] == 0 and tp["lost"] == 0, "duplicate or lost email"
    return {"throughput": tp, "latency": lat, "goals_met": ok_tp and ok_lat}


if __name__ == "__main__":
    main()
