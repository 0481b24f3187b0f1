"""Released revisions are frozen: sql/released.sha256 lists their files' checksums,
and any change to a listed file fails here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from skene_pg import migrations, schema_files
from skene_pg.resources import resource_dir
from skene_pg.schema_files import FROZEN_MESSAGE

ROOT = resource_dir("sql").parent
RELEASED_AT_LEAST = "0004"  # the revisions up to here shipped; they stay listed


def test_released_revisions_are_unchanged() -> None:
    problems = schema_files.frozen_violations()
    assert not problems, FROZEN_MESSAGE + ":\n  " + "\n  ".join(problems)


def test_released_revisions_are_the_start_of_the_chain() -> None:
    released = schema_files.released_revisions()
    chain = migrations.revisions()
    assert released == chain[: len(released)], "revisions are released in order"
    assert RELEASED_AT_LEAST in released, (
        f"{RELEASED_AT_LEAST} and every revision before it shipped"
    )


def test_the_list_is_sha256sum_format() -> None:
    result = subprocess.run(
        ["sha256sum", "--check", "--quiet", "sql/released.sha256"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the revision files, nothing released yet."""
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "sql", root / "sql", ignore=shutil.ignore_patterns("released.sha256"))
    shutil.copytree(
        ROOT / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def test_release_freezes_revisions_in_order(checkout: Path) -> None:
    with pytest.raises(ValueError, match="release 0001 first"):
        schema_files.release("0002", checkout)
    added = schema_files.release("0001", checkout)
    assert [line.split("  ")[1] for line in added] == [
        "migrations/versions/0001_gating_core.py",
        "sql/0001_gating_core.down.sql",
        "sql/0001_gating_core.up.sql",
    ]
    with pytest.raises(ValueError, match="0001 is released already"):
        schema_files.release("0001", checkout)
    with pytest.raises(ValueError, match="unknown revision"):
        schema_files.release("0099", checkout)
    schema_files.release("0002", checkout)
    assert schema_files.released_revisions(checkout) == ["0001", "0002"]
    assert schema_files.frozen_violations(checkout) == []
    listing = (checkout / "sql" / "released.sha256").read_text()
    assert listing == (ROOT / "sql" / "released.sha256").read_text()[: len(listing)]


def test_editing_deleting_or_adding_to_a_released_revision_is_caught(checkout: Path) -> None:
    schema_files.release("0001", checkout)
    schema_files.release("0002", checkout)
    up = checkout / "sql" / "0001_gating_core.up.sql"
    up.write_text(up.read_text().replace("gating core", "gating  core", 1))
    (checkout / "migrations" / "versions" / "0002_worker.py").unlink()
    (checkout / "sql" / "0002_worker_extra.up.sql").write_text("SELECT 1;\n")
    (checkout / "sql" / "0003_billing.up.sql").write_text("-- not released: free to change\n")
    assert schema_files.frozen_violations(checkout) == [
        "sql/0001_gating_core.up.sql: edited after its release",
        "migrations/versions/0002_worker.py: released, now missing",
        "sql/0002_worker_extra.up.sql: a new file in released revision 0002",
    ]


def test_release_entry_point(checkout: Path) -> None:
    # python -m skene_pg.schema_files release 0001
    assert schema_files.main(["release", "0001", "--root", str(checkout)]) == 0
    assert schema_files.released_revisions(checkout) == ["0001"]
    assert schema_files.main(["release", "0001", "--root", str(checkout)]) == 1
