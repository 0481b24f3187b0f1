"""A throwaway local PostgreSQL cluster for the demo, the tests and the benchmarks.

It runs the machine's own PostgreSQL binaries. `initdb` refuses to run as root, so
when we are root (CI is) the cluster is owned by, and run as, an unprivileged system
user. It listens on 127.0.0.1 only, trusts local connections, and preloads pg_cron
when the machine has it: it is for development, never for production.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

SUPERUSER = "postgres"
DEFAULT_DBNAME = "skene"
# Used only when running as root and the machine has no `postgres` user.
FALLBACK_OS_USER = "skene-pg"


class DevDBError(RuntimeError):
    """The local cluster could not be set up; the message says what to do."""


def find_bindir() -> Path:
    """The newest PostgreSQL server binaries on this machine (or $SKENE_PG_BINDIR)."""
    override = os.environ.get("SKENE_PG_BINDIR")
    candidates = [Path(override)] if override else []
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise DevDBError(
        "no PostgreSQL server binaries found (looked for initdb under /usr/lib/postgresql/*/bin "
        "and `pg_config --bindir`). Install them (Debian: apt-get install postgresql-15 "
        "postgresql-15-cron, or run `make setup` as root) or set SKENE_PG_BINDIR."
    )


def pg_cron_available(bindir: Path) -> bool:
    """True when the pg_cron library is installed for these binaries."""
    pg_config = bindir / "pg_config"
    if not pg_config.exists():
        return False
    out = subprocess.run([str(pg_config), "--pkglibdir"], capture_output=True, text=True)
    return out.returncode == 0 and (Path(out.stdout.strip()) / "pg_cron.so").exists()


def default_directory() -> Path:
    """Where `skene-pg dev-db` keeps its cluster unless told otherwise.

    As root the cluster belongs to another user, who must be able to reach it, and a
    checkout under /root is not reachable; so root's clusters live under /tmp, one per
    project folder.
    """
    if env := os.environ.get("SKENE_DEVDB_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        digest = hashlib.sha256(str(Path.cwd().resolve()).encode()).hexdigest()[:10]
        return Path("/tmp") / f"skene-pg-dev-{digest}"
    return Path(".skene") / "dev-db"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _RunAs:
    """The OS user the server runs as: ourselves, or an unprivileged one when root."""

    uid: int
    gid: int
    name: str

    @classmethod
    def for_current_process(cls) -> _RunAs:
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)
        for name in (SUPERUSER, FALLBACK_OS_USER):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                FALLBACK_OS_USER,
            ],
            check=True,
        )
        entry = pwd.getpwnam(FALLBACK_OS_USER)
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)

    def run(self, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            kwargs = {"user": self.uid, "group": self.gid, "extra_groups": []}
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


class DevCluster:
    """One local cluster in `directory` (data, log and a small state file).

    `fast=True` turns off durability (fsync, synchronous commit): right for tests,
    wrong for benchmarks that should resemble production. `preload_pg_cron=False` and
    `settings` (postgresql.conf lines, written after the defaults) let tests start the
    clusters they are about: one without pg_cron running, say.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        fast: bool = False,
        cron_database: str = DEFAULT_DBNAME,
        max_connections: int = 200,
        preload_pg_cron: bool = True,
        settings: dict[str, str] | None = None,
    ):
        self.directory = Path(directory).resolve()
        self.data_dir = self.directory / "data"
        self.log_file = self.directory / "postgres.log"
        self.state_file = self.directory / "cluster.json"
        self.fast = fast
        self.cron_database = cron_database
        self.max_connections = max_connections
        self.preload_pg_cron = preload_pg_cron
        self.settings = dict(settings or {})
        self._requested_port = port
        self.bindir = find_bindir()
        self.owner = _RunAs.for_current_process()

    # -- facts -------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self.state_file.exists():
            return int(json.loads(self.state_file.read_text())["port"])
        if self._requested_port is None:
            self._requested_port = free_port()
        return self._requested_port

    @property
    def has_pg_cron(self) -> bool:
        return pg_cron_available(self.bindir)

    def url(self, dbname: str = DEFAULT_DBNAME) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.is_initialized():
            return False
        result = self.owner.run(
            [str(self.bindir / "pg_ctl"), "status", "-D", str(self.data_dir)], cwd=self.directory
        )
        return result.returncode == 0

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> str:
        """Create (first time) and start the cluster; returns the `skene` database URL."""
        if not self.is_initialized():
            self._init()
        if not self.is_running():
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))
        self._ensure_database(DEFAULT_DBNAME)
        if self.has_pg_cron and self.preload_pg_cron:
            self._wait_for_pg_cron()
        return self.url()

    def stop(self) -> None:
        if self.is_running():
            self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")

    def restart(self) -> None:
        """Stop and start again on the same port (used by fault tests)."""
        self._pg_ctl("restart", "-m", "fast", "-w", "-t", "60", "-l", str(self.log_file))

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- internals ---------------------------------------------------------------
    def _init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.directory, self.owner.uid, self.owner.gid)
        result = self.owner.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            cwd=self.directory,
        )
        if result.returncode != 0:
            raise DevDBError(f"initdb failed in {self.data_dir}:\n{result.stderr.strip()}")
        port = self.port
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            # TCP only: a socket path under a deep folder can exceed the OS limit.
            "unix_socket_directories": "''",
            "max_connections": str(self.max_connections),
            "timezone": "'UTC'",
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        if self.has_pg_cron and self.preload_pg_cron:
            settings |= {
                "shared_preload_libraries": "'pg_cron'",
                "cron.database_name": f"'{self.cron_database}'",
            }
        settings |= self.settings
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# added by skene-pg dev-db\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        self.state_file.write_text(json.dumps({"port": port}))

    def _pg_ctl(self, *args: str) -> None:
        result = self.owner.run(
            [str(self.bindir / "pg_ctl"), *args, "-D", str(self.data_dir)], cwd=self.directory
        )
        if result.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise DevDBError(f"pg_ctl {args[0]} failed: {result.stderr.strip()}\n{tail}")

    def _wait_for_pg_cron(self, timeout: float = 15.0) -> None:
        """pg_cron's launcher connects to its database, which start() may have just
        created: it retries about every second. Wait for it, so that an apply right
        after start finds pg_cron running (and does not hand the loops to the worker)."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.cron_database,)
            ).fetchone():
                return  # nothing to connect to: pg_cron stays down until it exists
            while time.monotonic() < deadline:
                if conn.execute(
                    "SELECT 1 FROM pg_stat_activity "
                    "WHERE backend_type = 'pg_cron launcher' AND datname = %s",
                    (self.cron_database,),
                ).fetchone():
                    return
                time.sleep(0.1)

    def _ensure_database(self, dbname: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
