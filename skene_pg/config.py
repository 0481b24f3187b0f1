"""Read and validate `skene.toml` (DESIGN.md §4).

Pure: no database, environment or network. The whole file is checked and every
mistake is reported with its file, line and dotted field (`loops[1].dormant_after`),
so a user fixes them all in one go rather than one per run.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Key = str | int  # a table key, or an index into an array
FieldPath = tuple[Key, ...]

# The same patterns as the CHECK constraints on skene.plans and skene.features, so a
# file that validates never fails on insert.
PLAN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
FEATURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
# No ':' in loop names: the SQL joins them into dedupe keys with ':'.
LOOP_NAME = PLAN_NAME
PERIODS = ("day", "week", "month", "billing_cycle", "lifetime")
LOOP_TYPES = ("freemium", "retention", "milestone")
CHANNELS = ("email",)  # more channels come with their senders
BACKOFFS = ("none", "linear", "exponential")
HTTP_METHODS = ("*", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_BIGINT = 2**63 - 1  # usage_limit is a bigint
UNLIMITED = "unlimited"

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DURATION = re.compile(r"([1-9][0-9]{0,5}) ?(second|minute|hour|day|week)s?")
_DURATION_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def duration_seconds(value: str) -> int | None:
    """Seconds of a valid duration ("30 seconds", "7 days"), or None."""
    found = _DURATION.fullmatch(value.strip())
    return int(found[1]) * _DURATION_SECONDS[found[2]] if found else None


# --------------------------------------------------------------------------------
# What a valid file becomes
# --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanSpec:
    name: str
    paid: bool = False
    stripe_prices: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    period: str
    limits: dict[str, int | None]  # plan -> limit; None: unlimited, 0: not in plan
    soft: bool = False
    meter: str | None = None
    match: tuple[dict, ...] = ()


@dataclass(frozen=True)
class LoopSpec:
    name: str
    type: str
    feature: str | None
    config: dict  # the loop's table minus name, type, feature and enabled
    enabled: bool = True


@dataclass(frozen=True)
class SkeneConfig:
    default_plan: str
    plans: tuple[PlanSpec, ...]
    features: tuple[FeatureSpec, ...]
    loops: tuple[LoopSpec, ...]
    source: Path


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class ConfigError(Exception):
    """The file has mistakes; `.problems` lists every one."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def load_config(path: Path) -> SkeneConfig:
    """Parse and validate `path`; raises ConfigError listing every mistake."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([Problem(path, None, "", f"cannot read the file: {reason}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(path, text, exc)]) from exc
    checker = _Checker(path, _Locator(text))
    config = checker.document(data)
    if checker.problems or config is None:
        raise ConfigError(sorted(checker.problems, key=lambda p: p.line or 0))
    return config


def dotted(path: FieldPath) -> str:
    """`("loops", 1, "recovery")` -> `loops[1].recovery`; odd keys are quoted."""
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += ("." if out else "") + (key if _BARE_KEY.fullmatch(key) else json.dumps(key))
    return out


def _syntax_problem(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> Problem:
    # tomllib (3.11) only puts the position in the message: "... (at line 3, column 5)".
    message = str(exc)
    found = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if found:
        line: int | None = int(found[1])
        message = f"{message[: found.start()]} (column {found[2]})"
    elif message.endswith(" (at end of document)"):
        line = max(1, len(text.splitlines()))
        message = message.removesuffix(" (at end of document)") + " (at the end of the file)"
    else:
        line = None
    return Problem(path, line, "", f"invalid TOML: {message}")


# --------------------------------------------------------------------------------
# Line numbers: tomllib keeps none, so a small scanner walks the (already valid)
# source and notes the line where each table, key and array element starts.
# --------------------------------------------------------------------------------

_SCALAR_END = re.compile(r"[^,\]}\n#]*")
_STRINGS = (
    ('"""', re.compile(r'"""(?:[^\\]|\\.)*?""""{0,2}', re.S)),
    ("'''", re.compile(r"'''.*?''''{0,2}", re.S)),
    ('"', re.compile(r'"(?:[^"\\\n]|\\.)*"')),
    ("'", re.compile(r"'[^'\n]*'")),
)


class _Locator:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[FieldPath, int] = {}
        self.array_sizes: dict[FieldPath, int] = {}  # [[array]] path -> elements so far
        # Best effort: on anything unexpected, keep the lines found so far.
        with contextlib.suppress(IndexError, ValueError):
            self._document()

    def locate(self, path: FieldPath) -> int | None:
        """The line of `path`, or of its nearest enclosing table, key or element."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    # -- scanning --
    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def _at(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def _expect(self, token: str) -> None:
        if not self._at(token):
            raise ValueError(f"expected {token!r} at {self.pos}")
        self.pos += len(token)

    def _skip_blank(self, newlines: bool = True) -> None:
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r" or (newlines and char == "\n"):
                self.pos += 1
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def _note(self, path: FieldPath, line: int) -> None:
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], line)

    def _document(self) -> None:
        table: FieldPath = ()
        while True:
            self._skip_blank()
            if self.pos >= len(self.text):
                return
            line = self.line
            if self._at("[["):
                self.pos += 2
                keys = self._key()
                self._skip_blank(newlines=False)
                self._expect("]]")
                array = (*self._resolve(keys[:-1]), keys[-1])
                index = self.array_sizes.get(array, 0)
                self.array_sizes[array] = index + 1
                table = (*array, index)
                self._note(table, line)
            elif self._at("["):
                self.pos += 1
                table = self._resolve(self._key())
                self._skip_blank(newlines=False)
                self._expect("]")
                self._note(table, line)
                self.lines[table] = line  # [a.b] after [a.b.c]: its own header wins
            else:
                self._key_value(table)

    def _resolve(self, keys: list[str]) -> FieldPath:
        # Inside [a.b], a key `a` that is an array of tables means its last element.
        path: FieldPath = ()
        for key in keys:
            path = (*path, key)
            if path in self.array_sizes:
                path = (*path, self.array_sizes[path] - 1)
        return path

    def _key(self) -> list[str]:
        keys = []
        while True:
            self._skip_blank(newlines=False)
            char = self.text[self.pos]
            if char in "\"'":
                raw = self._string()
                keys.append(tomllib.loads(f"k = {raw}")["k"])
            else:
                found = _BARE_KEY.match(self.text, self.pos)
                if not found:
                    raise ValueError(f"no key at {self.pos}")
                keys.append(found[0])
                self.pos = found.end()
            self._skip_blank(newlines=False)
            if not self._at("."):
                return keys
            self.pos += 1

    def _key_value(self, table: FieldPath) -> None:
        line = self.line
        path = (*table, *self._key())
        self._note(path, line)
        self._skip_blank(newlines=False)
        self._expect("=")
        self._skip_blank(newlines=False)
        self._value(path)

    def _string(self) -> str:
        for opener, pattern in _STRINGS:
            if self._at(opener):
                found = pattern.match(self.text, self.pos)
                if not found:
                    raise ValueError(f"unterminated string at {self.pos}")
                self.pos = found.end()
                return found[0]
        raise ValueError(f"no string at {self.pos}")

    def _value(self, path: FieldPath) -> None:
        char = self.text[self.pos]
        if char in "\"'":
            self._string()
        elif char == "[":
            self.pos += 1
            index = 0
            while True:
                self._skip_blank()
                if self._at("]"):
                    self.pos += 1
                    return
                self._note((*path, index), self.line)
                self._value((*path, index))
                self._skip_blank()
                if self._at(","):
                    self.pos += 1
                index += 1
        elif char == "{":
            self.pos += 1
            while True:
                self._skip_blank()
                if self._at("}"):
                    self.pos += 1
                    return
                self._key_value(path)
                self._skip_blank()
                if self._at(","):
                    self.pos += 1
        else:
            found = _SCALAR_END.match(self.text, self.pos)
            assert found is not None  # the pattern matches the empty string
            self.pos = found.end()


# --------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------

_CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_COMMON_LOOP_KEYS = ("enabled", "recovery")
_LOOP_KEYS = {  # type -> (required, optional), besides the common keys
    "freemium": (("feature", "message", "upgrade_prompt"), ("attribution_window",)),
    "retention": (
        ("schedule", "dormant_after", "template"),
        (
            "steps",
            "segment",
            "segment_timeout",
            "message",
            "holdout_percent",
            "frequency_cap",
            "quiet_hours",
        ),
    ),
    "milestone": (("thresholds", "template"), ("feature", "event", "message")),
}
# Columns of skene.loops; everything else in a loop's table is its config.
_LOOP_COLUMNS = ("name", "type", "feature", "enabled")


def describe(value: Any) -> str:
    """A value as the user wrote it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times


def _names(names: Any) -> str:
    return ", ".join(names) if names else "none"


class _Checker:
    """Collects every problem; each check returns the checked value, or None."""

    def __init__(self, file: Path, locator: _Locator) -> None:
        self.file = file
        self.locator = locator
        self.problems: list[Problem] = []

    def report(self, path: FieldPath, message: str) -> None:
        self.problems.append(Problem(self.file, self.locator.locate(path), dotted(path), message))

    # -- shapes and types --
    def table(
        self,
        value: Any,
        path: FieldPath,
        required: tuple[str, ...] = (),
        optional: tuple[str, ...] = (),
        what: str = "a table",
    ) -> dict | None:
        if not isinstance(value, dict):
            self.report(path, f"must be {what}, got {describe(value)}")
            return None
        allowed = (*required, *optional)
        suggested = set()
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                suggested.update(close)
                self.report((*path, key), f"unknown key; {hint}allowed: {_names(allowed)}")
        for key in required:
            if key not in value and key not in suggested:  # a typo is reported once
                self.report((*path, key), "is required")
        return value

    def mapping(self, value: Any, path: FieldPath, what: str) -> dict | None:
        """A table whose keys are the user's names (plans, features, limits)."""
        if not isinstance(value, dict):
            self.report(path, f"must be {what}, got {describe(value)}")
            return None
        return value

    def string(self, value: Any, path: FieldPath) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.report(path, f"must be a non-empty string, got {describe(value)}")
            return None
        return value

    def boolean(self, value: Any, path: FieldPath) -> bool | None:
        if not isinstance(value, bool):
            self.report(path, f"must be true or false, got {describe(value)}")
            return None
        return value

    def whole(self, value: Any, path: FieldPath, minimum: int) -> int | None:
        # bool is an int in Python; `retries = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.report(path, f"must be a whole number >= {minimum}, got {describe(value)}")
            return None
        return value

    def choice(self, value: Any, path: FieldPath, choices: tuple[str, ...]) -> str | None:
        if not isinstance(value, str) or value not in choices:
            self.report(path, f"{describe(value)} is not one of {', '.join(choices)}")
            return None
        return value

    def name(self, value: str, path: FieldPath, pattern: re.Pattern[str], what: str) -> None:
        if not pattern.fullmatch(value):
            self.report(path, f"{describe(value)} is not a valid {what} name: {_RULES[what]}")

    # -- the document --
    def document(self, data: dict) -> SkeneConfig | None:
        self.table(data, (), required=("default_plan", "plans"), optional=("features", "loops"))
        plans = self.plans(data["plans"]) if "plans" in data else ()
        plan_names = tuple(p.name for p in plans)
        default = data.get("default_plan", "")
        # Without a valid plans table every plan would look undefined: say it once.
        if (
            "default_plan" in data
            and self.string(default, ("default_plan",)) is not None
            and isinstance(data.get("plans"), dict)
            and default not in plan_names
        ):
            self.report(
                ("default_plan",),
                f"{describe(default)} is not a defined plan; defined: {_names(plan_names)}",
            )
        features = self.features(data.get("features", {}), plan_names)
        loops = self.loops(data.get("loops", []), tuple(f.name for f in features))
        if self.problems:
            return None
        return SkeneConfig(default, plans, features, loops, self.file)

    def plans(self, value: Any) -> tuple[PlanSpec, ...]:
        if self.mapping(value, ("plans",), "a table of plans ([plans.free], ...)") is None:
            return ()
        if not value:
            self.report(("plans",), "define at least one plan, e.g. [plans.free]")
        specs = []
        owner: dict[str, str] = {}  # stripe price -> plan, to catch a price mapped twice
        for name, body in value.items():
            path: FieldPath = ("plans", name)
            self.name(name, path, PLAN_NAME, "plan")
            if self.table(body, path, optional=("paid", "stripe_prices")) is None:
                specs.append(PlanSpec(name))
                continue
            paid = self.boolean(body.get("paid", False), (*path, "paid"))
            prices = self.stripe_prices(body.get("stripe_prices", []), name, owner)
            specs.append(PlanSpec(name, bool(paid), prices))
        return tuple(specs)

    def stripe_prices(self, value: Any, plan: str, owner: dict[str, str]) -> tuple[str, ...]:
        path: FieldPath = ("plans", plan, "stripe_prices")
        if not isinstance(value, list):
            self.report(path, f"must be an array of price ids, got {describe(value)}")
            return ()
        prices = []
        for index, price in enumerate(value):
            if self.string(price, (*path, index)) is None:
                continue
            if price in owner:
                where = (
                    "listed twice"
                    if owner[price] == plan
                    else f"already mapped to plan {owner[price]}"
                )
                self.report(
                    (*path, index),
                    f"{describe(price)} is {where}; a price may map to one plan only",
                )
                continue
            owner[price] = plan
            prices.append(price)
        return tuple(prices)

    def features(self, value: Any, plans: tuple[str, ...]) -> tuple[FeatureSpec, ...]:
        what = "a table of features ([features.api_calls], ...)"
        if self.mapping(value, ("features",), what) is None:
            return ()
        specs = []
        for name, body in value.items():
            path: FieldPath = ("features", name)
            self.name(name, path, FEATURE_NAME, "feature")
            if (
                self.table(
                    body, path, required=("period", "limits"), optional=("soft", "meter", "match")
                )
                is None
            ):
                continue
            period = body.get("period")
            if "period" in body and not is_period(period):
                self.report(
                    (*path, "period"),
                    f"{describe(period)} is not a period; use day, "
                    "week, month, Nd (e.g. 30d, 1-366), billing_cycle or lifetime",
                )
            limits = self.limits(body.get("limits", {}), (*path, "limits"), plans)
            soft = self.boolean(body.get("soft", False), (*path, "soft"))
            meter = body.get("meter")
            if meter is not None:
                self.string(meter, (*path, "meter"))
            match = self.match(body.get("match", []), (*path, "match"))
            specs.append(FeatureSpec(name, period, limits, bool(soft), meter, match))
        return tuple(specs)

    def limits(self, value: Any, path: FieldPath, plans: tuple[str, ...]) -> dict[str, int | None]:
        what = 'a table of plan = limit, e.g. { free = 100, pro = "unlimited" }'
        if self.mapping(value, path, what) is None:
            return {}
        limits: dict[str, int | None] = {}
        for plan, limit in value.items():
            if plan not in plans:
                self.report(
                    (*path, plan),
                    f"{describe(plan)} is not a defined plan; defined: {_names(plans)}",
                )
            if limit == UNLIMITED:
                limits[plan] = None
            elif type(limit) is int and 0 <= limit <= MAX_BIGINT:  # bool is not a number here
                limits[plan] = limit
            else:
                self.report(
                    (*path, plan),
                    f"must be a whole number >= 0 (0: not in the plan) or "
                    f'"unlimited", got {describe(limit)}',
                )
        return limits

    def match(self, value: Any, path: FieldPath) -> tuple[dict, ...]:
        if not isinstance(value, list):
            self.report(
                path,
                f'must be an array of {{ method = "POST", path = "/api/..." }} '
                f"tables, got {describe(value)}",
            )
            return ()
        for index, pattern in enumerate(value):
            where = (*path, index)
            if self.table(pattern, where, required=("path",), optional=("method",)) is None:
                continue
            if "method" in pattern:
                self.choice(pattern["method"], (*where, "method"), HTTP_METHODS)
            if (
                "path" in pattern
                and self.string(pattern["path"], (*where, "path"))
                and not pattern["path"].startswith("/")
            ):
                self.report((*where, "path"), f'{describe(pattern["path"])} must start with "/"')
        return tuple(value)

    # -- loops --
    def loops(self, value: Any, features: tuple[str, ...]) -> tuple[LoopSpec, ...]:
        if not isinstance(value, list):
            self.report(
                ("loops",),
                f"must be an array of tables: write each loop as [[loops]], got {describe(value)}",
            )
            return ()
        specs = []
        seen: dict[str, int] = {}
        for index, body in enumerate(value):
            spec = self.loop(body, ("loops", index), features)
            if spec is None:
                continue
            if spec.name in seen:
                first = seen[spec.name]
                self.report(
                    ("loops", index, "name"),
                    f"{describe(spec.name)} is already the name of loops[{first}]",
                )
                continue
            seen[spec.name] = index
            specs.append(spec)
        return tuple(specs)

    def loop(self, body: Any, path: FieldPath, features: tuple[str, ...]) -> LoopSpec | None:
        if not isinstance(body, dict):
            self.report(path, f"must be a table ([[loops]]), got {describe(body)}")
            return None
        name = None  # "is required" comes from the key check below
        if "name" in body and self.string(body["name"], (*path, "name")) is not None:
            name = body["name"]
            self.name(name, (*path, "name"), LOOP_NAME, "loop")
        kind = body.get("type", "")
        if "type" not in body:
            self.report((*path, "type"), f"is required: one of {', '.join(LOOP_TYPES)}")
            return None
        if self.choice(kind, (*path, "type"), LOOP_TYPES) is None:
            return None
        required, optional = _LOOP_KEYS[kind]
        self.table(
            body,
            path,
            required=("name", "type", *required),
            optional=(*_COMMON_LOOP_KEYS, *optional),
        )
        enabled = self.boolean(body.get("enabled", True), (*path, "enabled"))
        if "recovery" in body:
            self.recovery(body["recovery"], (*path, "recovery"))
        feature = body.get("feature")
        if kind == "milestone" and ("feature" in body) == ("event" in body):
            self.report(
                (*path, "feature"),
                "a milestone counts either a feature or an event: "
                "set exactly one of feature and event",
            )
        if (
            "feature" in body
            and self.string(feature, (*path, "feature")) is not None
            and feature not in features
        ):
            self.report(
                (*path, "feature"),
                f"{describe(feature)} is not a defined feature; defined: {_names(features)}",
            )
        getattr(self, kind)(body, path)
        if name is None:
            return None
        config = {k: v for k, v in body.items() if k not in _LOOP_COLUMNS}
        return LoopSpec(name, kind, feature, config, enabled is not False)

    def freemium(self, body: dict, path: FieldPath) -> None:
        if "message" in body:
            self.string(body["message"], (*path, "message"))
        if "upgrade_prompt" in body:
            where = (*path, "upgrade_prompt")
            prompt = self.table(body["upgrade_prompt"], where, required=("channel", "template"))
            if prompt is not None:
                if "channel" in prompt and prompt["channel"] not in CHANNELS:
                    self.report(
                        (*where, "channel"),
                        f"{describe(prompt['channel'])} is not "
                        f'supported; channel must be "email" (the only channel for now)',
                    )
                if "template" in prompt:
                    self.string(prompt["template"], (*where, "template"))
        if "attribution_window" in body:  # conversions credit prompts sent this long before
            self.duration(body["attribution_window"], (*path, "attribution_window"))

    def retention(self, body: dict, path: FieldPath) -> None:
        if "schedule" in body and self.string(body["schedule"], (*path, "schedule")):
            mistake = cron_mistake(body["schedule"])
            if mistake:
                self.report((*path, "schedule"), mistake)
        dormant = None
        if "dormant_after" in body:
            dormant = self.duration(body["dormant_after"], (*path, "dormant_after"))
        if "template" in body:
            self.string(body["template"], (*path, "template"))
        if "segment" in body:
            self.string(body["segment"], (*path, "segment"))
        if "steps" in body:
            self.steps(body["steps"], (*path, "steps"), dormant, body.get("dormant_after"))
        for key in ("segment_timeout", "frequency_cap"):
            if key in body:
                self.duration(body[key], (*path, key))
        if "message" in body:
            self.string(body["message"], (*path, "message"))
        if "holdout_percent" in body:
            percent = self.whole(body["holdout_percent"], (*path, "holdout_percent"), 0)
            if percent is not None and percent > 100:
                self.report((*path, "holdout_percent"), f"{percent} is more than 100 (percent)")
        if "quiet_hours" in body:
            self.quiet_hours(body["quiet_hours"], (*path, "quiet_hours"))

    def quiet_hours(self, value: Any, path: FieldPath) -> None:
        if self.table(value, path, required=("start", "end")) is None:
            return
        for key in ("start", "end"):
            found = value.get(key)
            if key in value and not (isinstance(found, str) and _CLOCK.fullmatch(found)):
                self.report(
                    (*path, key), f'{describe(found)} is not a time of day; use e.g. "21:00"'
                )

    def milestone(self, body: dict, path: FieldPath) -> None:
        if "message" in body:
            self.string(body["message"], (*path, "message"))
        if "event" in body:
            self.string(body["event"], (*path, "event"))
        if "template" in body:
            self.string(body["template"], (*path, "template"))
        if "thresholds" not in body:
            return
        thresholds, where = body["thresholds"], (*path, "thresholds")
        if not isinstance(thresholds, list) or not thresholds:
            self.report(
                where,
                f"must be a non-empty array of whole numbers, e.g. [100, 1000], "
                f"got {describe(thresholds)}",
            )
            return
        previous = 0
        for index, threshold in enumerate(thresholds):
            if self.whole(threshold, (*where, index), 1) is None:
                continue
            if threshold <= previous:
                self.report(
                    (*where, index),
                    f"{threshold} must be greater than the threshold "
                    f"before it ({previous}): thresholds increase",
                )
            previous = threshold

    def recovery(self, value: Any, path: FieldPath) -> None:
        if self.table(value, path, optional=("retries", "backoff")) is None:
            return
        if "retries" in value:
            self.whole(value["retries"], (*path, "retries"), 0)
        if "backoff" in value:
            self.choice(value["backoff"], (*path, "backoff"), BACKOFFS)

    def steps(
        self, value: Any, path: FieldPath, dormant: int | None = None, dormant_text: Any = None
    ) -> None:
        """Each step's `after` is later than the one before it and than dormant_after
        (`dormant` seconds, None when missing or invalid): the first message goes out
        at dormant_after, so a step not later than that is never sent."""
        if not isinstance(value, list):
            self.report(
                path,
                f'must be an array of {{ after = "14 days", template = "..." }} '
                f"tables, got {describe(value)}",
            )
            return
        previous, first = dormant or 0, dormant is not None
        for index, step in enumerate(value):
            where = (*path, index)
            if self.table(step, where, required=("after", "template")) is None:
                continue
            if "template" in step:
                self.string(step["template"], (*where, "template"))
            seconds = self.duration(step["after"], (*where, "after")) if "after" in step else None
            if seconds is None:
                continue
            if seconds <= previous and first:
                self.report(
                    (*where, "after"),
                    f"must be later than dormant_after ({describe(dormant_text)}): the "
                    f"first message goes out then, so this step would never be sent; "
                    f"make it later or shorten dormant_after",
                )
            elif seconds <= previous:
                self.report((*where, "after"), "must be later than the step before it")
            previous, first = seconds, False

    def duration(self, value: Any, path: FieldPath) -> int | None:
        """Seconds of "7 days", "36 hours", ... (a PostgreSQL interval as well)."""
        found = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        if not found:
            self.report(
                path,
                f'{describe(value)} is not a duration; use e.g. "7 days" or '
                f'"36 hours" (minutes, hours, days or weeks)',
            )
            return None
        return int(found[1]) * _DURATION_SECONDS[found[2]]


_RULES = {
    "plan": "1-63 letters, digits, _ . - starting with a letter or digit",
    "feature": "1-63 letters, digits, _ . : - starting with a letter or digit",
    "loop": "1-63 letters, digits, _ . - starting with a letter or digit",
}


def is_period(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    found = re.fullmatch(r"([1-9][0-9]{0,2})d", value)
    return int(found[1]) <= 366 if found else value in PERIODS


# --------------------------------------------------------------------------------
# Cron schedules (the five fields pg_cron takes)
# --------------------------------------------------------------------------------

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
CRON_FIELDS = (  # label, lowest, highest, names (numbered from lowest); also retention/cron.py
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_CRON_PART = re.compile(r"(?:\*|(\w+)(?:-(\w+))?)(?:/([0-9]+))?")


def cron_mistake(schedule: str) -> str | None:
    """What is wrong with a five-field cron schedule, or None."""
    fields = schedule.split()
    if len(fields) != 5:
        return (
            f"{describe(schedule)} is not a cron schedule: it needs 5 fields (minute hour "
            f'day-of-month month day-of-week), e.g. "0 9 * * *"'
        )
    for text, (label, low, high, names) in zip(fields, CRON_FIELDS, strict=True):
        for part in text.split(","):
            found = _CRON_PART.fullmatch(part)
            if not found or found[3] == "0":
                return f"{describe(schedule)}: {label} {describe(part)} is not valid cron syntax"
            for bound in (found[1], found[2]):
                if bound is None:
                    continue
                number = (
                    names.index(bound.lower()) + low
                    if bound.lower() in names
                    else (int(bound) if bound.isdigit() else None)
                )
                if number is None or not low <= number <= high:
                    return (
                        f"{describe(schedule)}: {label} {describe(bound)} is out of range "
                        f"{low}-{high}"
                    )
    return None
