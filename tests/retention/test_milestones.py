"""Milestones: one celebration per customer and threshold, never again, also when
many connections count at once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg

from tests.retention.conftest import add_loop


def _reached(conn: psycopg.Connection) -> list[tuple[str, str, int]]:
    return conn.execute(
        "SELECT m.loop_name, m.customer_id, m.threshold FROM skene.milestones_reached m "
        "JOIN skene.jobs j ON j.id = m.job_id ORDER BY 1, 2, 3"
    ).fetchall()


def _hammer(connect: Callable[..., psycopg.Connection], query: str, args: tuple, n: int) -> None:
    conns = [connect() for _ in range(8)]
    barrier = threading.Barrier(len(conns))

    def work(c: psycopg.Connection) -> None:
        barrier.wait()
        for _ in range(n):
            c.execute(query, args)

    threads = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_feature_milestones_once_per_threshold_under_concurrent_usage(
    catalogue: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    conn = catalogue
    add_loop(conn, "calls", "milestone", {"thresholds": [10, 100, 150]}, feature="api_calls")
    _hammer(connect, "SELECT skene.check_and_increment('ada', 'api_calls')", (), 25)  # 200
    assert _reached(conn) == [("calls", "ada", 10), ("calls", "ada", 100), ("calls", "ada", 150)]
    jobs = conn.execute(
        "SELECT payload ->> 'template', (payload ->> 'used')::int, dedupe_key FROM skene.jobs "
        "ORDER BY id"
    ).fetchall()
    assert jobs == [
        ("milestone", 10, "milestone:calls:10:ada"),
        ("milestone", 100, "milestone:calls:100:ada"),
        ("milestone", 150, "milestone:calls:150:ada"),
    ]


def test_a_threshold_crossed_again_in_a_new_period_is_never_celebrated_twice(
    catalogue: psycopg.Connection,
) -> None:
    conn = catalogue
    add_loop(conn, "monthly", "milestone", {"thresholds": [3]}, feature="monthly")
    for _ in range(4):
        conn.execute("SELECT skene.check_and_increment('ada', 'monthly')")
    conn.execute("SELECT set_config('skene.now', '2026-02-03T00:00:00Z', false)")
    for _ in range(4):
        conn.execute("SELECT skene.check_and_increment('ada', 'monthly')")
    assert _reached(conn) == [("monthly", "ada", 3)]


def test_the_usage_trigger_exists_only_for_features_with_a_milestone_loop(
    catalogue: psycopg.Connection,
) -> None:
    conn = catalogue
    triggers = (
        "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
        "WHERE tgrelid = 'skene.usage'::regclass AND tgname LIKE 'usage_milestones%' ORDER BY 1"
    )
    assert conn.execute(triggers).fetchall() == []
    add_loop(conn, "calls", "milestone", {"thresholds": [100, 1]}, feature="api_calls")
    found = conn.execute(triggers).fetchall()
    assert [name for name, _ in found] == ["usage_milestones", "usage_milestones_insert"]
    for _, definition in found:
        assert "new.feature = 'api_calls'::text" in definition
        assert "'{1,100}'::bigint[]" in definition  # sorted, for width_bucket
        assert "monthly" not in definition
    conn.execute("SELECT skene.check_and_increment('bob', 'monthly')")  # not watched
    assert _reached(conn) == []
    # a change that keeps features and thresholds leaves the triggers alone
    oids = "SELECT oid FROM pg_trigger WHERE tgname LIKE 'usage_milestones%' ORDER BY 1"
    before = conn.execute(oids).fetchall()
    conn.execute('UPDATE skene.loops SET config = config || \'{"template": "x"}\'')
    assert conn.execute(oids).fetchall() == before
    # gone with the last loop, also when its marker comment was lost (a restore)
    conn.execute("COMMENT ON TRIGGER usage_milestones ON skene.usage IS NULL")
    conn.execute("UPDATE skene.loops SET enabled = false WHERE name = 'calls'")
    assert conn.execute(triggers).fetchall() == []


def test_changed_thresholds_apply_at_once_and_one_call_may_cross_several(
    catalogue: psycopg.Connection,
) -> None:
    conn = catalogue
    add_loop(conn, "calls", "milestone", {"thresholds": [100]}, feature="api_calls")
    for _ in range(2):
        conn.execute("SELECT skene.check_and_increment('ada', 'api_calls')")
    conn.execute(
        "UPDATE skene.loops SET config = jsonb_set(config, '{thresholds}', '[3, 50, 100]') "
        "WHERE name = 'calls'"
    )
    conn.execute("SELECT skene.check_and_increment('ada', 'api_calls')")  # 3
    assert _reached(conn) == [("calls", "ada", 3)]
    conn.execute("SELECT skene.check_and_increment('ada', 'api_calls', 150)")  # 153
    assert _reached(conn) == [("calls", "ada", 3), ("calls", "ada", 50), ("calls", "ada", 100)]


def test_a_new_period_counts_from_zero_even_on_the_call_that_starts_it(
    catalogue: psycopg.Connection,
) -> None:
    """5 used in January before the loop existed; February's first call of 4 crosses 3."""
    conn = catalogue
    conn.execute("SELECT skene.check_and_increment('ada', 'monthly', 5)")
    add_loop(conn, "monthly", "milestone", {"thresholds": [3]}, feature="monthly")
    conn.execute("SELECT skene.check_and_increment('ada', 'monthly')")  # 6: nothing crossed
    assert _reached(conn) == []
    conn.execute("SELECT set_config('skene.now', '2026-02-03T00:00:00Z', false)")
    conn.execute("SELECT skene.check_and_increment('ada', 'monthly', 4)")
    assert _reached(conn) == [("monthly", "ada", 3)]


def test_event_milestones_once_per_threshold_under_concurrent_tracking(
    catalogue: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    conn = catalogue
    add_loop(conn, "projects", "milestone", {"event": "project_created", "thresholds": [1, 50]})
    _hammer(connect, "SELECT skene.track('ada', 'project_created')", (), 10)  # 80
    conn.execute("SELECT skene.track('ada', 'login')")  # not counted
    assert _reached(conn) == [("projects", "ada", 1), ("projects", "ada", 50)]
    assert conn.execute("SELECT event, count FROM skene.event_counts").fetchall() == [
        ("project_created", 80)
    ]
