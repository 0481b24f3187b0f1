"""skene-pg: SaaS growth loops (usage limits, upgrade prompts, plan sync, retention)
inside the application's own PostgreSQL database.

    from skene_pg import Skene
    skene = Skene("postgresql://app@db/app")
    decision = skene.check_and_increment("cus_42", "api_calls")
"""

__version__ = "0.1.0"

from skene_pg.client import AsyncSkene, Decision, Refund, Skene
from skene_pg.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidArgument,
    NotConfigured,
    PermissionDenied,
    SchemaMissing,
    SkeneError,
    TryAgain,
)
from skene_pg.gates import Gate

__all__ = [
    "AsyncSkene",
    "DatabaseError",
    "DatabaseUnavailable",
    "Decision",
    "Gate",
    "InvalidArgument",
    "NotConfigured",
    "PermissionDenied",
    "Refund",
    "SchemaMissing",
    "Skene",
    "SkeneError",
    "TryAgain",
    "__version__",
]
