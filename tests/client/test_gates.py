"""Which requests a feature's `match` patterns gate: the path glob and the method."""

from __future__ import annotations

import pytest

from skene_pg.gates import Gate, GateCache

CASES = [
    # pattern, method, path, matches
    ({"path": "/api/**"}, "GET", "/api/v1/things", True),
    ({"path": "/api/**"}, "GET", "/api/", True),
    ({"path": "/api/**"}, "GET", "/api", False),
    ({"path": "/api/*"}, "GET", "/api/things", True),
    ({"path": "/api/*"}, "GET", "/api/v1/things", False),  # * stays within a segment
    ({"path": "/v1/*/export"}, "POST", "/v1/42/export", True),
    ({"path": "/v1/*/export"}, "POST", "/v1/42/export/x", False),
    ({"path": "/exact"}, "GET", "/exact", True),
    ({"path": "/exact"}, "GET", "/exact/", False),
    ({"path": "/a.b(c)+"}, "GET", "/a.b(c)+", True),  # regex characters are literal
    ({"path": "/a.b"}, "GET", "/axb", False),
    ({"method": "POST", "path": "/api/**"}, "post", "/api/x", True),
    ({"method": "POST", "path": "/api/**"}, "GET", "/api/x", False),
    ({"method": "*", "path": "/api/**"}, "DELETE", "/api/x", True),
]


@pytest.mark.parametrize(("pattern", "method", "path", "matches"), CASES)
def test_match_patterns(pattern: dict, method: str, path: str, matches: bool) -> None:
    gate = Gate.from_row(("api_calls", None, [pattern], None, None))
    assert gate.matches(method, path) is matches
    assert gate.name == "api_calls"


def test_cache_keeps_the_last_table_when_stale() -> None:
    cache = GateCache(ttl=0)
    assert cache.fresh() is None and cache.stale() is None
    table = cache.store(
        [
            Gate.from_row(("b", None, [{"path": "/b"}], None, None)),
            Gate.from_row(("a", None, [{"path": "/**"}], None, None)),
        ]
    )
    assert [g.feature for g in table.matching("GET", "/b")] == ["a", "b"]  # in name order
    assert cache.fresh() is None  # ttl 0: always re-read ...
    assert cache.stale() is table  # ... but the last good table is there for a failed read
