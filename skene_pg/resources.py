"""Where the shipped SQL, alembic environment and examples are.

In a wheel they sit inside the package (pyproject force-includes them); in a source
checkout (editable install, tests) they are the top-level folders of the repo.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """`sql`, `migrations` or `examples`, wherever this install keeps them."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"skene-pg is installed without its {name}/ folder ({_PACKAGE})")


def sql_file(name: str) -> str:
    return (resource_dir("sql") / name).read_text()
