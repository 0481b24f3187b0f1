"""The connection-path check of `skene-pg doctor`: is a transaction pooler (or
anything forwarding connections) in front of the database URL, and if so, does
SKENE_LISTEN_DATABASE_URL give `skene-pg listen` the direct connection its LISTEN
needs."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from skene_pg import db
from skene_pg.doctor.common import Finding, one_row
from skene_pg.logs import first_line


@dataclass(frozen=True)
class _Path:
    url_port: int | None
    server_port: int | None
    backends: int  # distinct backend pids over a few transactions on one connection


def _path(conn: psycopg.Connection) -> _Path:
    port, configured = one_row(
        conn, "SELECT pg_catalog.inet_server_port(), pg_catalog.current_setting('port')"
    )
    pids = {one_row(conn, "SELECT pg_catalog.pg_backend_pid()")[0] for _ in range(3)}
    try:
        url_port: int | None = int(conn.info.port)
    except (TypeError, ValueError):
        url_port = None
    return _Path(url_port, port or int(configured), len(pids))


def check_pooler(conn: psycopg.Connection, listen_url: str | None) -> list[Finding]:
    """A transaction pooler (PgBouncer in transaction mode, Supavisor on 6543, ...)
    gives each transaction whichever server connection is free: the application's
    calls are fine with that, `listen`'s LISTEN is not. Two signs: the backend changes
    between transactions of one connection, or the URL's port is not the server's."""
    path = _path(conn)
    need = (
        "SKENE_LISTEN_DATABASE_URL=postgresql://...   # a direct (or session-pooled) URL "
        "for skene-pg listen",
    )
    if path.backends > 1:
        finding = Finding(
            "pooler",
            "warning",
            "a transaction pooler is in front: the server connection changed between "
            "transactions of one client connection. The gate works through it; "
            "`skene-pg listen` needs a direct connection for LISTEN",
            need,
        )
    elif path.url_port is not None and path.server_port != path.url_port:
        finding = Finding(
            "pooler",
            "warning",
            f"something forwards connections: the URL's port is {path.url_port}, the "
            f"server's {path.server_port} (a proxy, a port mapping or a pooler). If it "
            "pools by transaction, `skene-pg listen` needs a direct connection for LISTEN",
            need,
        )
    else:
        return [
            Finding(
                "pooler",
                "ok",
                f"direct connection (server port {path.server_port}; the same backend "
                "across transactions)",
            )
        ]
    if not listen_url:
        return [finding]
    try:
        with db.connect(listen_url, autocommit=True, connect_timeout=10) as direct:
            listen_path = _path(direct)
    except psycopg.Error as exc:
        return [
            finding,
            Finding(
                "pooler",
                "blocker",
                f"SKENE_LISTEN_DATABASE_URL cannot connect: {first_line(exc)}",
            ),
        ]
    if listen_path.backends == 1 and listen_path.server_port == listen_path.url_port:
        host = conninfo_to_dict(listen_url).get("host") or "localhost"
        return [
            Finding(
                "pooler",
                "ok",
                f"{finding.message.split(':')[0]}; skene-pg listen connects directly "
                f"(SKENE_LISTEN_DATABASE_URL, {host}:{listen_path.url_port})",
            )
        ]
    return [
        finding,
        Finding(
            "pooler",
            "warning",
            "SKENE_LISTEN_DATABASE_URL does not look direct either",
            need,
        ),
    ]
