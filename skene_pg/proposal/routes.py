"""API routes found in an app's code, for features with `match`: Django's urls.py
(`path`, `re_path`), FastAPI's decorators (`@app.post("/...")`, an APIRouter's prefix)
and Next.js route handlers (`app/api/**/route.ts` exporting GET, POST, ...; also
`pages/api`). Read as text: nothing of the app is imported or run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_SKIPPED_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".next", "dist", "build"}
_DJANGO_PATH = re.compile(r"""\b(re_)?path\(\s*r?["']([^"']*)["']""")
_FASTAPI = re.compile(
    r"""@(\w+)\.(get|post|put|patch|delete)\(\s*["']([^"']*)["']""", re.IGNORECASE
)
_ROUTER_PREFIX = re.compile(r"""(\w+)\s*=\s*APIRouter\([^)]*prefix\s*=\s*["']([^"']*)["']""")
_NEXT_METHOD = re.compile(
    r"export\s+(?:async\s+)?(?:function\s+|const\s+)(GET|POST|PUT|PATCH|DELETE)\b"
)
# not product usage: the admin, authentication, webhooks, health checks, static files
_NOT_USAGE = re.compile(
    r"(^|/)(admin|auth|login|logout|signup|register|webhooks?|health|static|media|__debug__)(/|$)"
)


@dataclass(frozen=True)
class Route:
    method: str  # GET, POST, ... or * (any)
    path: str  # "/api/projects/*": parameters become *
    where: str  # the file it was found in, relative to the app folder


def find_routes(root: Path) -> list[Route]:
    routes: list[Route] = []
    for file in sorted(_files(root)):
        relative = file.relative_to(root).as_posix()
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if file.name == "urls.py":
            routes += _django(text, relative)
        elif file.suffix == ".py":
            routes += _fastapi(text, relative)
        elif file.stem == "route" and file.suffix in (".ts", ".js", ".tsx", ".jsx", ".mjs"):
            routes += _next_app(text, relative)
        elif "/pages/api/" in f"/{relative}" and file.suffix in (".ts", ".js"):
            routes += _next_pages(relative)
    seen = set()
    unique = []
    for route in routes:
        if (route.method, route.path) not in seen and not _NOT_USAGE.search(route.path):
            seen.add((route.method, route.path))
            unique.append(route)
    return unique


def _files(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if any(part in _SKIPPED_DIRS for part in path.relative_to(root).parts):
            continue
        if path.is_file() and path.suffix in (".py", ".ts", ".js", ".tsx", ".jsx", ".mjs"):
            found.append(path)
    return found


def _django(text: str, where: str) -> list[Route]:
    routes = []
    for regex, pattern in _DJANGO_PATH.findall(text):
        if regex:
            pattern = re.sub(r"\(\?P<\w+>[^)]*\)|\([^)]*\)", "<p>", pattern.strip("^$"))
        path = "/" + re.sub(r"<[^>]+>", "*", pattern).lstrip("/")
        if path != "/":
            routes.append(Route("*", path, where))
    return routes


def _fastapi(text: str, where: str) -> list[Route]:
    prefixes = dict(_ROUTER_PREFIX.findall(text))
    routes = []
    for owner, method, pattern in _FASTAPI.findall(text):
        path = prefixes.get(owner, "").rstrip("/") + "/" + pattern.lstrip("/")
        routes.append(Route(method.upper(), re.sub(r"\{[^}]+\}", "*", path), where))
    return routes


def _next_path(parts: list[str]) -> str:
    kept = [p for p in parts if not (p.startswith("(") and p.endswith(")"))]  # route groups
    return "/" + "/".join("*" if p.startswith("[") else p for p in kept)


def _next_app(text: str, where: str) -> list[Route]:
    parts = where.split("/")[:-1]
    if "app" not in parts:
        return []
    path = _next_path(parts[parts.index("app") + 1 :])
    methods = _NEXT_METHOD.findall(text) or ["*"]
    return [Route(method, path, where) for method in methods]


def _next_pages(where: str) -> list[Route]:
    parts = where.split("/")
    start = parts.index("pages") + 1
    *folders, name = parts[start:]
    stem = name.rsplit(".", 1)[0]
    return [Route("*", _next_path(folders + ([] if stem == "index" else [stem])), where)]
