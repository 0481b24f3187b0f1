"""skene.toml: the model (model), where each key sits in the file (locate), the
checks (checks, loops, validate), and applying it to the database (diff, apply).

Reading a file needs no database; `apply_config` is the only part that writes."""

from skene_pg.config.apply import (
    Applied,
    ApplyRefused,
    Change,
    apply_config,
    apply_with_warnings,
    diff,
)
from skene_pg.config.model import (
    ConfigError,
    FeatureSpec,
    LoopSpec,
    PlanSpec,
    Problem,
    SkeneConfig,
    duration_seconds,
)
from skene_pg.config.validate import load_config

__all__ = [
    "Applied",
    "ApplyRefused",
    "Change",
    "ConfigError",
    "FeatureSpec",
    "LoopSpec",
    "PlanSpec",
    "Problem",
    "SkeneConfig",
    "apply_config",
    "apply_with_warnings",
    "diff",
    "duration_seconds",
    "load_config",
]
