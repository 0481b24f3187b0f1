"""skene.toml validation: every mistake found, each with its line and dotted field."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from skene_pg.config import (
    ConfigError,
    FeatureSpec,
    LoopSpec,
    PlanSpec,
    Problem,
    duration_seconds,
    load_config,
)

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
default_plan = "free"

[plans.free]
[plans.pro]
paid = true

[features.api_calls]
period = "30d"
limits = { free = 100, pro = "unlimited" }

[[loops]]
name = "free_tier_limit"
type = "freemium"
feature = "api_calls"
message = "Upgrade to continue."
upgrade_prompt = { channel = "email", template = "upgrade_prompt" }
"""

RETENTION = """
[[loops]]
name = "dormant_users"
type = "retention"
schedule = "0 9 * * *"
dormant_after = "7 days"
template = "re_engagement"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "skene.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value.problems


def line_of(text: str, marker: str) -> int:
    """The 1-based line of the only line containing `marker`."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(found) == 1, f"{marker!r} is on lines {found}"
    return found[0]


# --------------------------------------------------------------------------------
# Valid files
# --------------------------------------------------------------------------------


def test_the_example_is_valid_and_mirrors_the_freemium_seed() -> None:
    config = load_config(ROOT / "examples" / "skene.toml")
    assert config.default_plan == "free"
    assert config.plans == (
        PlanSpec("free", False, ()),
        PlanSpec("pro", True, ("price_pro_monthly",)),
    )
    assert config.features == (FeatureSpec("api_calls", "30d", {"free": 100, "pro": None}),)
    assert config.loops[0] == (
        LoopSpec(
            "free_tier_limit",
            "freemium",
            "api_calls",
            {
                "message": "You've reached your free tier limit. Upgrade to continue.",
                "upgrade_prompt": {"channel": "email", "template": "upgrade_prompt"},
                "recovery": {"retries": 0},
            },
        )
    )
    # Every loop type that works is shown, enabled.
    assert [(loop.name, loop.type, loop.enabled) for loop in config.loops[1:]] == [
        ("dormant_users", "retention", True),
        ("api_milestones", "milestone", True),
    ]


def test_every_option_of_the_design_is_accepted(tmp_path: Path) -> None:
    text = (
        BASE
        + """\
recovery = { retries = 2, backoff = "linear" }
enabled = false

[features."exports:pdf"]
period = "month"
limits = { free = 0, pro = 50 }
soft = true
meter = "pdf_exports"
match = [
    { method = "POST", path = "/api/exports/*" },
    { path = "/api/pdf" },
]

[[loops]]
name = "dormant_users"
type = "retention"
schedule = "*/15 9-17 * jan-jun mon-fri"
dormant_after = "36 hours"
template = "re_engagement"
segment = "SELECT customer_id FROM skene.customers WHERE plan = 'free'"
steps = [{ after = "14 days", template = "second_nudge" }, { after = "3 weeks", template = "last" }]
recovery = { retries = 3, backoff = "exponential" }

[[loops]]
name = "big_user"
type = "milestone"
event = "project_created"
thresholds = [1, 10, 100]
template = "milestone"
"""
    )
    config = load_config(write(tmp_path, text))
    assert config.source == tmp_path / "skene.toml"
    exports = config.features[1]
    assert exports == FeatureSpec(
        "exports:pdf",
        "month",
        {"free": 0, "pro": 50},
        soft=True,
        meter="pdf_exports",
        match=({"method": "POST", "path": "/api/exports/*"}, {"path": "/api/pdf"}),
    )
    freemium, retention, milestone = config.loops
    assert freemium.enabled is False
    assert freemium.config["recovery"] == {"retries": 2, "backoff": "linear"}
    assert "enabled" not in freemium.config and "name" not in freemium.config
    assert retention.feature is None
    assert retention.config["dormant_after"] == "36 hours"
    assert retention.config["steps"][1] == {"after": "3 weeks", "template": "last"}
    assert milestone.config == {
        "event": "project_created",
        "thresholds": [1, 10, 100],
        "template": "milestone",
    }
    for loop in config.loops:  # written as jsonb
        assert json.loads(json.dumps(loop.config)) == loop.config


@pytest.mark.parametrize(
    "period", ["day", "week", "month", "billing_cycle", "lifetime", "1d", "30d", "366d"]
)
def test_every_period_is_accepted(tmp_path: Path, period: str) -> None:
    config = load_config(write(tmp_path, BASE.replace('"30d"', f'"{period}"')))
    assert config.features[0].period == period


# --------------------------------------------------------------------------------
# One mistake each: (text, dotted field, the line's marker or None, message fragment)
# --------------------------------------------------------------------------------


def swap(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


MISTAKES = {
    "period in words": (
        swap('"30d"', '"30 days"'),
        "features.api_calls.period",
        'period = "30 days"',
        '"30 days" is not a period; use day, week, month, Nd (e.g. 30d, 1-366), '
        "billing_cycle or lifetime",
    ),
    "period too long": (
        swap('"30d"', '"367d"'),
        "features.api_calls.period",
        "period =",
        "is not a period",
    ),
    "period zero": (
        swap('"30d"', '"0d"'),
        "features.api_calls.period",
        "period =",
        "is not a period",
    ),
    "period not a string": (
        swap('"30d"', "30"),
        "features.api_calls.period",
        "period =",
        "30 is not a period",
    ),
    "unknown top-level key": (
        "default_pan = 1\n" + BASE,
        "default_pan",
        "default_pan",
        "unknown key; did you mean default_plan?",
    ),
    "typo in a feature": (
        swap('period = "30d"', 'period = "30d"\nsfot = true'),
        "features.api_calls.sfot",
        "sfot",
        "did you mean soft? allowed: period, limits, name, soft, meter, match",
    ),
    "typo in a plan": (
        swap("paid = true", "payed = true"),
        "plans.pro.payed",
        "payed",
        "did you mean paid?",
    ),
    "typo in a loop": (
        swap('message = "', 'mesage = "'),
        "loops[0].mesage",
        "mesage",
        "did you mean message?",
    ),
    "typo in upgrade_prompt": (
        swap('channel = "email"', 'chanel = "email"'),
        "loops[0].upgrade_prompt.chanel",
        "chanel",
        "unknown key",
    ),
    "default_plan missing": (
        BASE.replace('default_plan = "free"\n', ""),
        "default_plan",
        None,
        "is required",
    ),
    "default_plan undefined": (
        swap('default_plan = "free"', 'default_plan = "gold"'),
        "default_plan",
        "default_plan",
        '"gold" is not a defined plan; defined: free, pro',
    ),
    "plans missing": ('default_plan = "free"\n', "plans", None, "is required"),
    "plan name": (
        swap("[plans.pro]", '[plans."pro plan"]').replace(
            'pro = "unlimited"', '"pro plan" = "unlimited"'
        ),
        'plans."pro plan"',
        '[plans."pro plan"]',
        "is not a valid plan name",
    ),
    "feature name": (
        swap("[features.api_calls]", '[features."-api"]').replace('"api_calls"', '"-api"'),
        "features.-api",
        "[features.",
        "is not a valid feature name",
    ),
    "paid not a boolean": (
        swap("paid = true", 'paid = "yes"'),
        "plans.pro.paid",
        "paid =",
        'must be true or false, got "yes"',
    ),
    "stripe price on two plans": (
        swap(
            "[plans.pro]",
            '[plans.free_x]\nstripe_prices = ["p1"]\n[plans.pro]\nstripe_prices = ["p2", "p1"]',
        ),
        "plans.pro.stripe_prices[1]",
        '"p2", "p1"',
        '"p1" is already mapped to plan free_x; a price may map to one plan only',
    ),
    "limits for an undefined plan": (
        swap("pro = ", "team = 5, pro = "),
        "features.api_calls.limits.team",
        "limits =",
        '"team" is not a defined plan; defined: free, pro',
    ),
    "negative limit": (
        swap("free = 100", "free = -1"),
        "features.api_calls.limits.free",
        "limits =",
        'must be a whole number >= 0 (0: not in the plan) or "unlimited", got -1',
    ),
    "boolean limit": (
        swap("free = 100", "free = true"),
        "features.api_calls.limits.free",
        "limits =",
        "got true",
    ),
    "float limit": (
        swap("free = 100", "free = 1.5"),
        "features.api_calls.limits.free",
        "limits =",
        "got 1.5",
    ),
    "other word than unlimited": (
        swap('"unlimited"', '"infinite"'),
        "features.api_calls.limits.pro",
        "limits =",
        'got "infinite"',
    ),
    "limits missing": (
        swap('limits = { free = 100, pro = "unlimited" }\n', ""),
        "features.api_calls.limits",
        "[features.api_calls]",
        "is required",
    ),
    "soft not a boolean": (
        swap('period = "30d"', 'period = "30d"\nsoft = 1'),
        "features.api_calls.soft",
        "soft =",
        "must be true or false, got 1",
    ),
    "meter not a string": (
        swap('period = "30d"', 'period = "30d"\nmeter = 3'),
        "features.api_calls.meter",
        "meter =",
        "must be a non-empty string, got 3",
    ),
    "match not an array": (
        swap('period = "30d"', 'period = "30d"\nmatch = "/api"'),
        "features.api_calls.match",
        "match =",
        "must be an array",
    ),
    "match without a path": (
        swap(
            'period = "30d"',
            'period = "30d"\nmatch = [\n  { path = "/a" },\n  { method = "POST" },\n]',
        ),
        "features.api_calls.match[1].path",
        '{ method = "POST" }',
        "is required",
    ),
    "match with a bad method": (
        swap('period = "30d"', 'period = "30d"\nmatch = [{ method = "FETCH", path = "/a" }]'),
        "features.api_calls.match[0].method",
        "match =",
        '"FETCH" is not one of *, GET',
    ),
    "loops as a table": (
        BASE.split("[[loops]]")[0] + '[loops]\nname = "x"\n',
        "loops",
        "[loops]",
        "must be an array of tables: write each loop as [[loops]]",
    ),
    "loop without name": (
        swap('name = "free_tier_limit"\n', ""),
        "loops[0].name",
        "[[loops]]",
        "is required",
    ),
    "loop name with a colon": (
        swap('name = "free_tier_limit"', 'name = "a:b"'),
        "loops[0].name",
        'name = "a:b"',
        "is not a valid loop name",
    ),
    "duplicate loop name": (
        BASE + BASE[BASE.index("[[loops]]") :].replace("[[loops]]", "[[loops]] # second"),
        "loops[1].name",
        None,
        '"free_tier_limit" is already the name of loops[0]',
    ),
    "unknown loop type": (
        swap('type = "freemium"', 'type = "winback"'),
        "loops[0].type",
        "type =",
        '"winback" is not one of freemium, retention, milestone',
    ),
    "freemium on an undefined feature": (
        swap('feature = "api_calls"', 'feature = "api_cals"'),
        "loops[0].feature",
        "feature =",
        '"api_cals" is not a defined feature; defined: api_calls',
    ),
    "freemium without message": (
        swap('message = "Upgrade to continue."\n', ""),
        "loops[0].message",
        "[[loops]]",
        "is required",
    ),
    "sms channel": (
        swap('channel = "email"', 'channel = "sms"'),
        "loops[0].upgrade_prompt.channel",
        "upgrade_prompt =",
        '"sms" is not supported; channel must be "email"',
    ),
    "negative retries": (
        BASE + "recovery = { retries = -1 }\n",
        "loops[0].recovery.retries",
        "recovery =",
        "must be a whole number >= 0, got -1",
    ),
    "boolean retries": (
        BASE + "recovery = { retries = true }\n",
        "loops[0].recovery.retries",
        "recovery =",
        "got true",
    ),
    "bad backoff": (
        BASE + 'recovery = { backoff = "fibonacci" }\n',
        "loops[0].recovery.backoff",
        "recovery =",
        '"fibonacci" is not one of exponential, linear, fixed',
    ),
    "retention dormant_after in loops[1]": (
        BASE + RETENTION.replace('"7 days"', '"a week"'),
        "loops[1].dormant_after",
        "dormant_after",
        '"a week" is not a duration; use e.g. "7 days" or "36 hours"',
    ),
    "cron with four fields": (
        BASE + RETENTION.replace('"0 9 * * *"', '"0 9 * *"'),
        "loops[1].schedule",
        "schedule",
        "it needs 5 fields",
    ),
    "cron hour out of range": (
        BASE + RETENTION.replace('"0 9 * * *"', '"0 25 * * *"'),
        "loops[1].schedule",
        "schedule",
        'hour "25" is out of range 0-23',
    ),
    "retention without template": (
        BASE + RETENTION.replace('template = "re_engagement"\n', ""),
        "loops[1].template",
        None,
        "is required",
    ),
    "retention steps going back": (
        BASE + RETENTION + 'steps = [\n  { after = "14 days", template = "a" },\n'
        '  { after = "1 week", template = "b" },\n]\n',
        "loops[1].steps[1].after",
        '"1 week"',
        "must be later than the step before it",
    ),
    "retention step before dormant_after": (
        BASE + RETENTION + 'steps = [{ after = "3 days", template = "a" }]\n',
        "loops[1].steps[0].after",
        "steps =",
        'must be later than dormant_after ("7 days"): the first message goes out then, '
        "so this step would never be sent; make it later or shorten dormant_after",
    ),
    "retention step at dormant_after": (
        BASE + RETENTION + 'steps = [{ after = "1 week", template = "a" }]\n',
        "loops[1].steps[0].after",
        "steps =",
        'must be later than dormant_after ("7 days")',
    ),
    "retention with a feature": (
        BASE + RETENTION + 'feature = "api_calls"  # retention\n',
        "loops[1].feature",
        "# retention",
        "unknown key",
    ),
    "milestone thresholds not increasing": (
        BASE + '[[loops]]\nname = "m"\ntype = "milestone"\nfeature = "api_calls"\n'
        'template = "milestone"\nthresholds = [10, 5]\n',
        "loops[1].thresholds[1]",
        "thresholds",
        "5 must be greater than the threshold before it",
    ),
    "milestone threshold zero": (
        BASE + '[[loops]]\nname = "m"\ntype = "milestone"\nevent = "signup"\n'
        'template = "milestone"\nthresholds = [0]\n',
        "loops[1].thresholds[0]",
        "thresholds",
        "must be a whole number >= 1, got 0",
    ),
    "milestone with feature and event": (
        BASE + '[[loops]]\nname = "m"\ntype = "milestone"\nevent = "signup"\n'
        'feature = "api_calls"\ntemplate = "milestone"\nthresholds = [1]\n',
        "loops[1].feature",
        None,
        "set exactly one of feature and event",
    ),
}


@pytest.mark.parametrize("case", MISTAKES, ids=str)
def test_each_mistake_is_reported_with_its_line_and_field(tmp_path: Path, case: str) -> None:
    text, field, marker, message = MISTAKES[case]
    found = problems(tmp_path, text)
    assert [p.field for p in found] == [field], found
    problem = found[0]
    assert message in problem.message
    assert problem.file == tmp_path / "skene.toml"
    if marker is not None:
        assert problem.line == line_of(text, marker), str(problem)


def test_a_missing_key_points_at_its_table(tmp_path: Path) -> None:
    text = BASE + RETENTION.replace('dormant_after = "7 days"\n', "")
    [problem] = problems(tmp_path, text)
    assert problem.field == "loops[1].dormant_after"
    assert problem.line == line_of(text, 'name = "dormant_users"') - 1  # its [[loops]]
    assert problem.message == "is required"


def test_steps_after_an_invalid_dormant_after_are_compared_with_each_other(
    tmp_path: Path,
) -> None:
    steps = 'steps = [{ after = "3 days", template = "a" }, { after = "2 days", template = "b" }]\n'
    text = BASE + RETENTION.replace('"7 days"', '"soon"') + steps
    found = problems(tmp_path, text)
    assert [(p.field, p.message) for p in found] == [
        ("loops[1].dormant_after", found[0].message),
        ("loops[1].steps[1].after", "must be later than the step before it"),
    ]


def test_steps_later_than_dormant_after_are_accepted(tmp_path: Path) -> None:
    text = BASE + RETENTION + 'steps = [{ after = "169 hours", template = "a" }]\n'
    assert load_config(write(tmp_path, text)).loops[1].config["steps"][0]["after"] == "169 hours"


def test_every_mistake_in_a_file_is_reported_in_line_order(tmp_path: Path) -> None:
    text = """\
default_plan = "gold"

[plans.free]
paid = "no"

[features.api_calls]
period = "30 days"
limits = { free = -5, team = 1 }

[[loops]]
name = "free_tier_limit"
type = "freemium"
feature = "api_calls"
message = "Upgrade."
upgrade_prompt = { channel = "sms", template = "upgrade_prompt" }

[[loops]]
name = "dormant_users"
type = "retention"
schedule = "0 9 * * *"
dormant_after = "soon"
template = "re_engagement"
"""
    found = problems(tmp_path, text)
    assert [(p.line, p.field) for p in found] == [
        (1, "default_plan"),
        (4, "plans.free.paid"),
        (7, "features.api_calls.period"),
        (8, "features.api_calls.limits.free"),
        (8, "features.api_calls.limits.team"),
        (15, "loops[0].upgrade_prompt.channel"),
        (21, "loops[1].dormant_after"),
    ]


def test_problem_and_error_text(tmp_path: Path) -> None:
    problem = Problem(
        Path("skene.toml"), 12, "features.api_calls.period", '"30 days" is not a period'
    )
    assert str(problem) == 'skene.toml:12: features.api_calls.period: "30 days" is not a period'
    assert (
        str(Problem(Path("skene.toml"), None, "default_plan", "is required"))
        == "skene.toml: default_plan: is required"
    )
    error = ConfigError([problem, Problem(Path("skene.toml"), 3, "plans.pro.paid", "bad")])
    assert str(error).splitlines() == [str(problem), "skene.toml:3: plans.pro.paid: bad"]


def test_a_toml_syntax_error_has_its_line(tmp_path: Path) -> None:
    text = BASE.replace('period = "30d"', "period = 30d")
    [problem] = problems(tmp_path, text)
    assert problem.line == line_of(text, "period = 30d")
    assert problem.message.startswith("invalid TOML: ")
    assert str(problem).startswith(f"{tmp_path / 'skene.toml'}:{problem.line}: invalid TOML")


def test_an_unterminated_string_points_at_the_end(tmp_path: Path) -> None:
    text = 'default_plan = "free"\n[plans.free]\n[features.x]\nperiod = "day\n'
    [problem] = problems(tmp_path, text)
    assert problem.line is not None and problem.line >= 4


def test_a_missing_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml")
    [problem] = caught.value.problems
    assert "cannot read the file" in problem.message


def test_lines_survive_tricky_toml(tmp_path: Path) -> None:
    """Multi-line strings that look like tables, dotted keys, quoted keys, comments
    with brackets, and nested arrays don't throw the locator off."""
    text = '''\
default_plan = "free" # [not.a.table]
plans.free.paid = false
"plans"."pro" = { paid = true }

[features.notes]
period = "day"
limits.free = 1
limits.pro = 2

[[loops]]
name = "m"
type = "milestone"
feature = "notes"
template = """
[[loops]]
dormant_after = "not a key"
"""
thresholds = [
  [1],
  2,
]
'''
    found = problems(tmp_path, text)
    assert [(p.line, p.field) for p in found] == [(19, "loops[0].thresholds[0]")]
    broken = text.replace("limits.pro = 2", 'limits.pro = "lots"').replace(
        "plans.free.paid = false", "plans.free.paid = 0"
    )
    found = problems(tmp_path, broken)
    assert [(p.line, p.field) for p in found] == [
        (2, "plans.free.paid"),
        (8, "features.notes.limits.pro"),
        (19, "loops[0].thresholds[0]"),
    ]


def test_freemium_attribution_window_is_a_duration(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(BASE + 'attribution_window = "14 days"\n')
    (loop,) = load_config(good).loops
    assert loop.config["attribution_window"] == "14 days"
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + 'attribution_window = "two weeks"\n')
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    assert [p.field for p in error.value.problems] == ["loops[0].attribution_window"]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("7 days", 604800), ("7d", 604800), ("10m", 600), ("12h", 43200), ("90 mins", 5400)],
)
def test_durations_take_the_short_forms_too(tmp_path: Path, written: str, seconds: int) -> None:
    path = tmp_path / "skene.toml"
    path.write_text(BASE + RETENTION.replace('"7 days"', f'"{written}"'))
    (loop,) = [loop for loop in load_config(path).loops if loop.type == "retention"]
    assert loop.config["dormant_after"] == written
    assert duration_seconds(written) == seconds


def test_short_durations_read_the_same_in_postgresql(conn: psycopg.Connection) -> None:
    # The SQL casts these strings to interval: both sides must agree on what they mean.
    for written in ("10m", "12h", "7d", "2w", "30s", "90 mins", "3 hrs"):
        (seconds,) = conn.execute(
            "SELECT extract(epoch FROM %s::interval)::bigint", (written,)
        ).fetchone() or (None,)
        assert seconds == duration_seconds(written), written


def test_a_recovery_base_must_be_a_duration(tmp_path: Path) -> None:
    path = tmp_path / "skene.toml"
    path.write_text(BASE + 'recovery = { backoff = "fixed", base = "soon" }\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert [p.field for p in raised.value.problems] == ["loops[0].recovery.base"]
