"""sql/schema.sql is the head schema, whole: what a fresh migrate leaves, dumped and
normalised the same way, byte for byte."""

from __future__ import annotations

import difflib

import psycopg
import pytest

from skene_pg import migrations, schema_files
from skene_pg.devdb import DevCluster
from skene_pg.resources import resource_dir

SCHEMA_SQL = resource_dir("sql") / schema_files.SCHEMA_SQL


def mismatch(committed: str, fresh: str) -> str:
    diff = difflib.unified_diff(
        committed.splitlines(), fresh.splitlines(), "sql/schema.sql", "fresh migrate", lineterm=""
    )
    shown = "\n".join(list(diff)[:60])
    return f"sql/schema.sql is not the head schema: run `make schema`\n{shown}"


def test_schema_sql_is_what_a_fresh_migrate_leaves(pg_cluster: DevCluster) -> None:
    committed = SCHEMA_SQL.read_text()
    fresh = schema_files.fresh_schema_sql(pg_cluster.url("postgres"))
    assert fresh == committed, mismatch(committed, fresh)
    assert f"(revision {migrations.head_revision()})" in committed.splitlines()[0]
    assert "CREATE FUNCTION skene.check_and_increment(" in committed


@pytest.fixture
def crowded_db(pg_cluster: DevCluster) -> str:
    """A database with more than skene in it: an extension, the app's own tables, a
    `cron` schema shaped like pg_cron's (whose extension only its own database has)
    first on the search_path."""
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS skene_crowded WITH (FORCE)")
        conn.execute("CREATE DATABASE skene_crowded")
    url = pg_cluster.url("skene_crowded")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgcrypto")
        conn.execute("CREATE TABLE public.events (customer_id text, created_at timestamptz)")
        conn.execute("CREATE SCHEMA cron")
        conn.execute("CREATE TABLE cron.job (jobid bigserial PRIMARY KEY, command text)")
        conn.execute("ALTER DATABASE skene_crowded SET search_path = cron, public")
    return url


def test_the_dump_shows_the_skene_schema_alone(crowded_db: str) -> None:
    migrations.upgrade(crowded_db)
    dumped = schema_files.dump_schema(crowded_db)
    committed = SCHEMA_SQL.read_text()
    assert committed.endswith(dumped), mismatch(committed, dumped)
    for other in ("pgcrypto", "public.events", "cron.job", "EXTENSION"):
        assert other not in dumped


def test_normalising_drops_pg_dumps_noise_and_nothing_else() -> None:
    body = "AS $$\nBEGIN\n    UPDATE t\nSET a = 1;\n\n\n\n-- Dumped from here\nEND\n$$;"
    dump = (
        "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\n"
        "-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)\n"
        "-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)\n\n"
        "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n"
        "SELECT pg_catalog.set_config('search_path', '', false);\n"
        "SET check_function_bodies = false;\n\n"
        "--\n-- Name: f(); Type: FUNCTION\n--\n\n"
        f"CREATE FUNCTION skene.f() RETURNS void LANGUAGE plpgsql\n    {body}\n\n\n"
        "SET default_table_access_method = heap;\n\n"
        "CREATE TABLE skene.t (a integer);\n\n"
        "--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict AbC123\n\n"
    )
    assert schema_files._normalise_dump(dump) == (
        "--\n-- PostgreSQL database dump\n--\n\n"
        "--\n-- Name: f(); Type: FUNCTION\n--\n\n"
        f"CREATE FUNCTION skene.f() RETURNS void LANGUAGE plpgsql\n    {body}\n\n"
        "CREATE TABLE skene.t (a integer);\n\n"
        "--\n-- PostgreSQL database dump complete\n--\n"
    )
