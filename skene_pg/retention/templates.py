"""`skene-pg apply` refuses a retention or milestone loop whose template does not
exist or uses a variable the worker never passes, before anything is scheduled."""

from __future__ import annotations

from pathlib import Path

from jinja2 import TemplateError, meta

from skene_pg.config import SkeneConfig
from skene_pg.email.templates import PARTS, TemplateRenderer

# What skene_pg.email.handler.template_variables passes, plus Jinja's own names.
KNOWN_VARIABLES = frozenset(
    {
        "customer",
        "user",
        "usage",
        "loop",
        "payload",
        "app_url",
        "upgrade_url",
        "unsubscribe_url",
        "range",
        "loop_index",
    }
)


def loop_templates(config: SkeneConfig) -> list[tuple[str, str]]:
    """(where, template) of every template a retention or milestone loop sends."""
    found = []
    for loop in config.loops:
        if loop.type not in ("retention", "milestone"):
            continue
        if "template" in loop.config:
            found.append((f"loops {loop.name}: template", loop.config["template"]))
        for index, step in enumerate(loop.config.get("steps") or []):
            found.append((f"loops {loop.name}: steps[{index}].template", step["template"]))
    return found


def template_problems(config: SkeneConfig, directory: str | Path | None) -> list[str]:
    renderer = TemplateRenderer(directory)
    names = set(renderer.names())
    problems = []
    for where, name in loop_templates(config):
        if name not in names:
            problems.append(
                f"{config.source}: {where}: no template {name!r}; "
                f"there are: {', '.join(sorted(names))}"
            )
            continue
        for _, suffix in PARTS:
            filename = name + suffix
            try:
                assert renderer.env.loader is not None
                source, _, _ = renderer.env.loader.get_source(renderer.env, filename)
                unknown = meta.find_undeclared_variables(renderer.env.parse(source)) - (
                    KNOWN_VARIABLES
                )
            except TemplateError as exc:
                problems.append(f"{config.source}: {where}: {filename} does not parse: {exc}")
                continue
            if unknown:
                problems.append(
                    f"{config.source}: {where}: {filename} uses unknown variable(s) "
                    f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN_VARIABLES))}"
                )
    return problems
