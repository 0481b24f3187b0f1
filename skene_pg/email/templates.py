"""Email templates: Jinja2 in a sandbox with strict undefined variables.

Each template NAME is three files: NAME.subject.txt, NAME.html and NAME.txt. Defaults
ship in this package (templates/); a project folder given with --templates or
SKENE_TEMPLATES_DIR is searched first, file by file, so a project can override just
the HTML of one template. A variable that is missing, or a value that is NULL where a
template prints it, fails the render with a reason naming the file, the line and the
variable: an email never goes out saying "Hi ,".
"""

from __future__ import annotations

import html as html_lib
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

PACKAGE_TEMPLATES = Path(__file__).resolve().parent / "templates"
PARTS = (("subject", ".subject.txt"), ("html", ".html"), ("text", ".txt"))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


class TemplateFailure(Exception):
    """A template could not be rendered; `reason` says which file, line and variable."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


class Vars(dict[str, Any]):
    """A dict of template variables that knows its name, for clear error messages."""

    def __init__(self, label: str, values: Mapping[str, Any]):
        super().__init__(values)
        self._skene_label = label


class _Undefined(StrictUndefined):
    @property
    def _undefined_message(self) -> str:
        obj, name = self._undefined_obj, self._undefined_name
        if self._undefined_hint is None and isinstance(obj, Vars) and isinstance(name, str):
            known = ", ".join(sorted(obj)) or "nothing"
            return f"{obj._skene_label} has no {name!r} (it has: {known})"
        return str(super()._undefined_message)


class _EmptyValue(TemplateError):
    pass


def _finalize(value: Any) -> Any:
    # StrictUndefined catches missing names; this catches NULLs printed as "None".
    if value is None:
        raise _EmptyValue(
            "a printed value is empty (NULL): guard it with {% if ... %} "
            'or give a default with `or`, e.g. {{ user.name or "there" }}'
        )
    return value


def _format_date(value: Any, fmt: str = "%B %-d, %Y") -> str:
    if isinstance(value, datetime | date):
        return value.strftime(fmt)
    if isinstance(value, str):
        return datetime.fromisoformat(value).strftime(fmt)
    raise _EmptyValue(f"date: expected a date, got {type(value).__name__}")


def _location(exc: BaseException, names: set[str]) -> str:
    """`file, line N` of the innermost template frame of a render error."""
    where = ""
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        filename = Path(tb.tb_frame.f_code.co_filename).name
        if filename in names:
            where = f"{filename}, line {tb.tb_lineno}"
        tb = tb.tb_next
    return where


class TemplateRenderer:
    def __init__(self, directory: str | Path | None = None):
        loaders = []
        if directory:
            self.directory: Path | None = Path(directory)
            loaders.append(FileSystemLoader(str(self.directory)))
        else:
            self.directory = None
        loaders.append(FileSystemLoader(str(PACKAGE_TEMPLATES)))
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            undefined=_Undefined,
            finalize=_finalize,
            autoescape=lambda name: bool(name and name.endswith(".html")),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["date"] = _format_date

    def names(self) -> list[str]:
        """Templates that have all three parts."""
        found: set[str] = set()
        for name in self.env.list_templates():
            if name.endswith(".subject.txt"):
                found.add(name.removesuffix(".subject.txt"))
        return sorted(n for n in found if all(self._exists(n + suffix) for _, suffix in PARTS))

    def _exists(self, filename: str) -> bool:
        try:
            self.env.get_template(filename)
        except TemplateNotFound:
            return False
        return True

    def render(self, name: str, variables: Mapping[str, Any]) -> Rendered:
        if not isinstance(name, str) or not _NAME.match(name):
            raise TemplateFailure(f"bad template name {name!r}")
        parts: dict[str, str] = {}
        for part, suffix in PARTS:
            filename = name + suffix
            try:
                template = self.env.get_template(filename)
            except TemplateNotFound as exc:
                where = f"{self.directory} or the defaults" if self.directory else "the defaults"
                raise TemplateFailure(
                    f"template {name!r} has no {filename} "
                    f"(looked in {where}; defaults: "
                    f"{', '.join(self.names())})"
                ) from exc
            except TemplateError as exc:
                raise TemplateFailure(f"template {filename}: {exc}") from exc
            try:
                parts[part] = template.render(variables)
            except TemplateError as exc:
                where = _location(exc, {filename, *self._layout_names()}) or filename
                raise TemplateFailure(f"template {where}: {exc}") from exc
        subject = " ".join(parts["subject"].split())
        if not subject:
            raise TemplateFailure(f"template {name}.subject.txt rendered an empty subject")
        return Rendered(subject=subject, html=parts["html"], text=parts["text"])

    def _layout_names(self) -> set[str]:
        return {Path(n).name for n in self.env.list_templates() if n.startswith("_")}


def ensure_unsubscribe(rendered: Rendered, unsubscribe_url: str) -> Rendered:
    """Every marketing email carries an unsubscribe link, even when a project's own
    template forgot it: a footer is added to the part that lacks it."""
    html, text = rendered.html, rendered.text
    escaped = html_lib.escape(unsubscribe_url, quote=True)
    if unsubscribe_url not in html and escaped not in html:
        footer = f'<p style="font-size:12px;color:#888888"><a href="{escaped}">Unsubscribe</a></p>'
        index = html.lower().rfind("</body>")
        html = html[:index] + footer + html[index:] if index >= 0 else html + footer
    if unsubscribe_url not in text:
        text = text.rstrip("\n") + f"\n\nUnsubscribe: {unsubscribe_url}\n"
    return Rendered(subject=rendered.subject, html=html, text=text)
