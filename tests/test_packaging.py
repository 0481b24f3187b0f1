"""`pip install .` (not only editable) must give a working skene-pg whose wheel carries
the SQL, the alembic environment and the example config."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("skene_pg-*.whl")
    return built


def test_wheel_carries_sql_migrations_and_examples(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for sql in (ROOT / "sql").glob("*.sql"):
        assert f"skene_pg/sql/{sql.name}" in names
    for revision in (ROOT / "migrations" / "versions").glob("*.py"):
        assert f"skene_pg/migrations/versions/{revision.name}" in names
    assert "skene_pg/migrations/env.py" in names
    assert "skene_pg/examples/skene.toml" in names
    for template in (ROOT / "skene_pg" / "email" / "templates").iterdir():
        assert f"skene_pg/email/templates/{template.name}" in names


def test_installed_wheel_migrates_from_outside_the_checkout(
    wheel: Path, tmp_path: Path, db_url: str
) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    # The installed copy comes first on the path; dependencies come from this venv.
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import skene_pg, sys; print(skene_pg.__file__); "
        "from skene_pg.cli import main; sys.argv = ['skene-pg', *sys.argv[1:]]; main()"
    )

    def skene_pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )

    printed = skene_pg("migrate", "--sql")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith(str(target))
    assert "CREATE FUNCTION skene.check_and_increment" in printed.stdout

    downgraded = skene_pg("migrate", "--downgrade", "base", "--database-url", db_url)
    assert downgraded.returncode == 0, downgraded.stderr
    upgraded = skene_pg("migrate", "--database-url", db_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "-> 0" in upgraded.stdout
