"""Node.js from pytest: `npm ci` from a committed lock (skipped while node_modules was
installed from that very lock), and the database the Node tests run against."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "node"
STAMP = ".skene-installed-lock"  # inside node_modules: the lock it was installed from

# The catalogue of the Node tests, applied with `skene-pg apply`; the clock of the
# database is fixed at NOW (skene.now, honoured for superusers), so periods are known.
NOW = "2026-03-10 12:00:00+00"
SKENE_TOML = """\
default_plan = "free"
upgrade_url = "https://app.example.com/billing"

[plans.free]
[plans.pro]
paid = true

[features.api_calls]
name = "API calls"
period = "month"
limits = { free = 100, pro = "unlimited" }
match = [{ method = "POST", path = "/api/features/*" }]

[features.exports]
name = "Exports"
period = "month"
limits = { free = 3, pro = 1000 }
match = [
    { method = "POST", path = "/api/exports/**" },
    { method = "POST", path = "/api/features/*" },
]

[features.burst]
period = "lifetime"
limits = { free = 20, pro = "unlimited" }

[features.seats]
name = "Seats"
period = "lifetime"
limits = { free = 3, pro = "unlimited" }

[features.sso]
name = "Single sign-on"
period = "month"
limits = { free = 0, pro = 10 }
match = [{ path = "/sso/**" }]

[[loops]]
name = "free_tier_limit"
type = "freemium"
feature = "api_calls"
message = "You've reached your free tier limit. Upgrade to continue."
upgrade_prompt = { channel = "email", template = "upgrade_prompt" }

[[loops]]
name = "exports_limit"
type = "freemium"
feature = "exports"
message = "Free plans include 3 exports a month."
upgrade_prompt = { channel = "email", template = "upgrade_prompt" }
"""


def libpq_to_url(conninfo: str) -> str:
    """postgresql://user@host:port/dbname from a libpq conninfo (what both Node drivers take)."""
    if conninfo.startswith(("postgres://", "postgresql://")):
        return conninfo
    params = conninfo_to_dict(conninfo)
    user = params.get("user", "postgres")
    host = params.get("host", "127.0.0.1")
    return f"postgresql://{user}@{host}:{params.get('port', 5432)}/{params['dbname']}"


def node_tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(
            "node and npm are not installed (Node 18.18+ runs clients/node and the example)"
        )
    return node, npm


def npm_ci(directory: Path) -> None:
    """`npm ci` in `directory`, unless node_modules was installed from this same lock."""
    _, npm = node_tools()
    lock = hashlib.sha256((directory / "package-lock.json").read_bytes()).hexdigest()
    stamp = directory / "node_modules" / STAMP
    if stamp.exists() and stamp.read_text() == lock:
        return
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
    done = subprocess.run(
        [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"npm ci in {directory}:\n{done.stdout}\n{done.stderr}"
    stamp.write_text(lock)


# The suite's PgBouncer (tests/deploy), so the Node client runs through it too.
from tests.deploy.conftest import connect_pooled, pgbouncer, pooled_url  # noqa: E402, F401
