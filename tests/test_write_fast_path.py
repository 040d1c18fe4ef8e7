"""The write path's shortcuts store exactly what the full path stores.

A Python write skips work when it provably changes nothing: the per-name
checks of a change that names only the model's plain fields
(``ParamSchema.plain_names``), the field filter of values the model knows
whole (``ParamSchema._known``), the JSON form of the fields no check reads
(``ParamSchema._checked_fields``) and the walk of ``encode_value`` for a
plain str, int, float, bool or None (``hotparams.schema._SCALARS``).  Here
the same writes go through both paths, one namespace each, and every key,
version hash and audit entry must come out the same, field by field, as
must every refusal.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, Field, SecretStr, field_validator

import hotparams
from hotparams import Check, schema
from hotparams.codec import encode_value
from hotparams.schema import ParamSchema

from .helpers import dump_namespace


class Tone(enum.Enum):
    WARM = "warm"
    COOL = "cool"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Inner(BaseModel):
    a: int = 1
    b: list[str] = []


class Wide(BaseModel):
    hotparams_checks: ClassVar[tuple[Check, ...]] = (Check("low", "<=", "high"),)

    temperature: float = Field(0.7, ge=0, le=2)
    ratio: float = 0.5
    count: int = 3
    big: int = 0
    name: str = "x"
    flag: bool = False
    maybe: int | None = None
    tags: list[str] = ["a"]
    inner: Inner = Inner()
    tone: Tone = Tone.WARM
    level: Level = Level.LOW
    when: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    key: SecretStr = SecretStr("s3cr3t-value")
    low: int = 0
    high: int = 10
    shout: str = "hey"

    @field_validator("shout")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


#: changes of every kind: coerced, unicode, nested, secret, refused
CHANGES: list[dict[Any, Any]] = [
    {"temperature": 0.93},
    {"temperature": 1},
    {"ratio": -0.0},
    {"ratio": 1e300},
    {"ratio": math.inf},
    {"ratio": math.nan},
    {"count": "42"},
    {"count": True},
    {"count": "many"},
    {"big": 2**63 - 1},
    {"big": 2**70},
    {"name": "h\u00e9llo \u2603"},
    {"name": ""},
    {"name": "hpenc:1:not-a-real-token"},
    {"flag": 1},
    {"maybe": 5},
    {"maybe": None},
    {"tags": ["b", "c"]},
    {"inner": {"a": 2, "b": ["x"]}},
    {"tone": "cool"},
    {"level": 2},
    {"when": "2026-03-04T05:06:07Z"},
    {"key": "another-secret-value"},
    {"low": 3, "high": 4},
    {"low": 11},
    {"shout": "quiet"},
    {"temperature": 0.5, "name": "both"},
    {"nope": 1},
    {"bad name": 1},
    {"@expect": 1},
    {"caf\u00e9": 1},
    {1: 2},
    {},
]


def _reference(s: ParamSchema[Any]) -> None:
    """Make ``s`` take the full path: no plain names, no known-whole
    shortcut, the JSON form of every field for the checks."""
    vars(s)["plain_names"] = frozenset()
    vars(s)["_known"] = frozenset()
    vars(s)["_checked_fields"] = s.fields


@pytest.fixture
def both(bus: hotparams.Bus, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``run(fn)``: ``fn(namespace)`` on the fast namespace, then on the
    reference one (full path); returns both outcomes."""
    bus.register("fast", Wide)
    bus.register("full", Wide)
    _reference(bus._schemas["full"])

    def outcome(fn: Callable[[str], Any], ns: str) -> Any:
        try:
            return ("ok", fn(ns))
        except hotparams.HotParamsError as exc:
            return ("refused", type(exc).__name__, getattr(exc, "errors", str(exc)))

    def run(fn: Callable[[str], Any]) -> tuple[Any, Any]:
        fast = outcome(fn, "fast")
        with monkeypatch.context() as m:
            m.setattr(schema, "_SCALARS", frozenset())
            full = outcome(fn, "full")
        return fast, full

    yield run


def _normalized(bus: hotparams.Bus, ns: str) -> dict[str, Any]:
    """Every key of ``ns`` under a name without the namespace; what differs
    by nature (times, epochs, request ids, stream ids) left out."""
    out: dict[str, Any] = {}
    for key, value in dump_namespace(bus.client, ns).items():
        name = key.replace("{" + ns + "}", "{ns}")
        if name.endswith((":rids", ":rids:at")):
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in ("ts", "@ts", "epoch", "created")}
        elif isinstance(value, list) and value and isinstance(value[0], tuple):
            value = [
                {k: v for k, v in fields.items() if k not in ("ts", "epoch")}
                for _, fields in value
                if isinstance(fields, dict)
            ]
        out[name] = value
    return out


def test_every_change_is_stored_and_refused_alike_on_both_paths(
    bus: hotparams.Bus, both: Callable[..., Any]
) -> None:
    for changes in CHANGES:
        fast, full = both(lambda ns, c=changes: bus.set(ns, c, author="t", source="s"))
        assert fast == full, changes
    fast, full = both(lambda ns: bus.unset(ns, ["count", "name"], author="t", source="s"))
    assert fast == full
    fast, full = both(
        lambda ns: bus.set(ns, {"ratio": 0.25}, expect_version=bus.head(ns).version, source="s")
    )
    assert fast == full
    fast, full = both(
        lambda ns: bus.set_many([(ns, c) for c in CHANGES[:4] + CHANGES[6:8]], source="s")
    )
    assert fast == full
    fast, full = both(lambda ns: bus.set_many([(ns, {"count": 1}), (ns, {"x y": 1})]))
    assert fast == full and fast[0] == "refused"
    fast_keys, full_keys = _normalized(bus, "fast"), _normalized(bus, "full")
    assert list(fast_keys) == list(full_keys)
    for key in fast_keys:  # version hashes, meta, schema, audit: field by field
        assert fast_keys[key] == full_keys[key], key
    assert bus.get("fast").values == bus.get("full").values


def test_scalar_values_are_encoded_as_encode_value_encodes_them() -> None:
    s = ParamSchema.of(Wide)
    for value in (0.93, 1.0, -0.0, 1e300, 0, -(2**63), 2**64 - 1, True, False, "", "\u2603", None):
        params = Wide.model_construct(ratio=value)
        assert s.encode("n", params, ["ratio"]) == {"ratio": encode_value(value)}
    for value in (math.inf, -math.inf, math.nan, 2**70, -(2**63) - 1):
        params = Wide.model_construct(ratio=value)
        with pytest.raises(hotparams.InvalidParams) as fast:
            s.encode("n", params, ["ratio"])
        with pytest.raises((TypeError, ValueError)) as full:
            encode_value(value)
        assert fast.value.errors == {"ratio": f"cannot be stored as JSON ({full.value})"}
    # a subclass of a scalar (an IntEnum) and any other value take encode_value's walk
    params = s.validate("n", {})
    assert s.encode("n", params, ["level", "tone", "when", "key", "inner"]) == {
        name: encode_value(getattr(params, name))
        for name in ("level", "tone", "when", "key", "inner")
    }


def test_validate_gives_the_same_params_and_errors_on_both_paths() -> None:
    fast, full = ParamSchema.of(Wide), ParamSchema.of(Wide)
    _reference(full)
    cases: list[dict[str, Any]] = [
        {},
        {"count": 5, "unknown_newer_field": 1},
        {"name": "hpenc:1:sealed"},
        {"key": "hpenc:1:sealed", "count": "x"},
        {"low": 9, "high": 1},
        {"temperature": 3},
        {"shout": "a", "tags": ["z"]},
    ]
    for values in cases:
        got: list[Any] = []
        for s in (fast, full):
            given = dict(values)
            try:
                got.append(("ok", s.validate("n", given).__dict__))
            except hotparams.InvalidParams as exc:
                got.append(("refused", exc.errors))
            assert given == values  # the caller's mapping is left as it was
        assert got[0] == got[1], values
