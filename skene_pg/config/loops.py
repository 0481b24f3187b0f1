"""Validation of [[loops]] in skene.toml."""

from __future__ import annotations

import re
from typing import Any

from skene_pg.config.checks import ShapeChecks
from skene_pg.config.model import (
    BACKOFFS,
    CHANNELS,
    LOOP_NAME,
    LOOP_TYPES,
    FieldPath,
    LoopSpec,
    describe,
    names_of,
)
from skene_pg.retention.cron import cron_mistake

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
# A retention loop whose condition is the app's own query: whoever it returns is
# reached, once an episode; no dormant_after, steps or segment.
_QUERY_LOOP_KEYS = (
    ("schedule", "template", "query"),
    (
        "customer_column",
        "timeout",
        "message",
        "holdout_percent",
        "frequency_cap",
        "quiet_hours",
    ),
)
# Columns of skene.loops; everything else in a loop's table is its config.
_LOOP_COLUMNS = ("name", "type", "feature", "enabled")


class LoopChecks(ShapeChecks):
    """[[loops]]: freemium, retention and milestone loops, recovery and steps."""

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
        if kind == "retention" and "query" in body:
            required, optional = _QUERY_LOOP_KEYS
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
                f"{describe(feature)} is not a defined feature; defined: {names_of(features)}",
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
        for key in ("query", "customer_column"):  # checked against the database by apply
            if key in body:
                self.string(body[key], (*path, key))
        if "steps" in body:
            self.steps(body["steps"], (*path, "steps"), dormant, body.get("dormant_after"))
        for key in ("segment_timeout", "timeout", "frequency_cap"):
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
        """start and end in the customer's time zone; `default_timezone` for customers
        without one (else UTC). Whether PostgreSQL knows the zone is checked by apply,
        against the database (skene_pg.config.timezones)."""
        if (
            self.table(value, path, required=("start", "end"), optional=("default_timezone",))
            is None
        ):
            return
        for key in ("start", "end"):
            found = value.get(key)
            if key in value and not (isinstance(found, str) and _CLOCK.fullmatch(found)):
                self.report(
                    (*path, key), f'{describe(found)} is not a time of day; use e.g. "21:00"'
                )
        if "default_timezone" in value:
            zone = value["default_timezone"]
            if not isinstance(zone, str) or not zone.strip():
                self.report(
                    (*path, "default_timezone"),
                    f'must be a time zone name such as "America/New_York", got {describe(zone)}',
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
        if self.table(value, path, optional=("retries", "backoff", "base")) is None:
            return
        if "retries" in value:
            self.whole(value["retries"], (*path, "retries"), 0)
        if "backoff" in value:
            self.choice(value["backoff"], (*path, "backoff"), BACKOFFS)
        if "base" in value:
            self.duration(value["base"], (*path, "base"))

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
