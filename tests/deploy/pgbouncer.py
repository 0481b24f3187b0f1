"""A real PgBouncer in transaction mode in front of the test cluster, for the tests of
what skene-pg promises through a pooler. It runs as the user the cluster runs as
(PgBouncer refuses to run as root), listens on a free loopback port, and trusts the
clients, as the test cluster does. Its small pool makes clients share server
processes all the time, which is what a busy production pooler does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from skene_pg.devdb import SUPERUSER, DevCluster, free_port

POOL_SIZE = 3  # server connections per database and user


def find_pgbouncer() -> str | None:
    """Debian installs it in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


class PgBouncer:
    def __init__(self, binary: str, cluster: DevCluster, directory: Path):
        self.binary = binary
        self.cluster = cluster
        self.directory = directory
        self.port = free_port()
        self.log_file = directory / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._write_config()
        owner = self.cluster.owner
        as_owner: dict[str, object] = {}
        if os.geteuid() == 0:
            as_owner = {"user": owner.uid, "group": owner.gid, "extra_groups": []}
        self.process = subprocess.Popen(  # type: ignore[call-overload]
            [self.binary, str(self.directory / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **as_owner,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start:\n{self.log_tail()}")
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"pgbouncer did not accept connections:\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # safe shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def url(self, dbname: str) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=dbname)

    def pooled(self, direct_url: str) -> str:
        """The same database as `direct_url`, through the pooler."""
        params = conninfo_to_dict(direct_url)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**params)

    def disconnect(self, dbname: str) -> None:
        """Drop every client and server connection to `dbname` (the admin console's
        KILL, then RESUME so it accepts clients again): the test's database can go."""
        with psycopg.connect(self.url("pgbouncer"), autocommit=True) as admin:
            for command in (f"KILL {dbname}", f"RESUME {dbname}"):
                # the admin console speaks only the simple query protocol
                result = admin.pgconn.exec_(command.encode())
                if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
                    message = result.error_message.decode(errors="replace")
                    raise RuntimeError(f"pgbouncer {command}: {message}")

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def _write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # trust still looks the user up in the auth file
        (self.directory / "userlist.txt").write_text(f'"{SUPERUSER}" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            # any database name goes to the test cluster: every test has its own
            f"* = host=127.0.0.1 port={self.cluster.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'userlist.txt'}\n"
            f"admin_users = {SUPERUSER}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {POOL_SIZE}\n"
            "max_client_conn = 500\n"
            f"logfile = {self.log_file}\n"
        )
        if os.geteuid() == 0:
            owner = self.cluster.owner
            for path in (self.directory, *self.directory.iterdir()):
                os.chown(path, owner.uid, owner.gid)
