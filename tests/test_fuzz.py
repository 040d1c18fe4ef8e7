"""Property tests: whatever a writer sends, a bad change is an InvalidParams
(or an HP_ error reply) and leaves the namespace byte-for-byte unchanged, and
whatever Redis accepts, the full pydantic model accepts too."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

import hotparams

from .helpers import dump_namespace


class FuzzParams(BaseModel):
    """Every rule the Lua side enforces, and no cross-field rule."""

    ratio: float = Field(0.5, ge=0, le=1)
    count: int = Field(3, gt=0, lt=100)
    big: int = 0
    name: str = Field("x", min_length=1, max_length=8)
    mode: Literal["a", "b", 3] = "a"
    flag: bool = False
    maybe: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=3)
    step: float = Field(0.5, multiple_of=0.25)


FIELDS = list(FuzzParams.model_fields)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
field_names = st.sampled_from([*FIELDS, "unknown", "tags2"])
raw_texts = st.one_of(
    json_values.map(json.dumps),
    st.text(max_size=20),
    st.sampled_from(["NaN", "1e999", "0x1f", "-0", "1.0", "1e2", '"a"', "[]", "{}", "null", "tru"]),
)

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def fuzz_bus(redis_url: str) -> Any:
    bus = hotparams.connect(redis_url)
    bus.register("fz", FuzzParams)
    yield bus
    bus.close()


def _stored_is_valid(bus: hotparams.Bus) -> None:
    values = bus.get("fz").values
    try:
        FuzzParams.model_validate(dict(values))
    except ValidationError as exc:  # pragma: no cover - a failure of the property
        raise AssertionError(f"Redis accepted values the model rejects: {values}: {exc}") from exc


@FUZZ
@given(changes=st.dictionaries(field_names, json_values, min_size=1, max_size=3))
def test_python_writer_commits_valid_changes_and_nothing_else(
    fuzz_bus: hotparams.Bus, changes: dict[str, Any]
) -> None:
    before = dump_namespace(fuzz_bus.client, "fz")
    old_values = dict(fuzz_bus.get("fz").values)
    try:
        version = fuzz_bus.set("fz", changes)
    except hotparams.InvalidParams as exc:
        assert set(exc.errors) <= {*changes, "*"}
        assert dump_namespace(fuzz_bus.client, "fz") == before
        return
    snap = fuzz_bus.get("fz")
    assert snap.version == version
    expected = FuzzParams.model_validate({**old_values, **changes})
    for name in changes:
        assert getattr(snap.params, name) == getattr(expected, name)


@FUZZ
@given(
    pairs=st.lists(st.tuples(field_names, raw_texts), min_size=1, max_size=3),
    function=st.sampled_from(["hp_set", "hp_commit"]),
)
def test_whatever_redis_accepts_the_model_accepts(
    fuzz_bus: hotparams.Bus, pairs: list[tuple[str, str]], function: str
) -> None:
    client: redis.Redis = fuzz_bus.client
    before = dump_namespace(client, "fz")
    args = [part for pair in pairs for part in pair]
    try:
        client.fcall(function, 1, "fz", *args)
    except redis.ResponseError as exc:
        assert str(exc).split(" ", 1)[0] in {"HP_INVALID", "HP_BADARG"}, str(exc)
        assert dump_namespace(client, "fz") == before
        return
    _stored_is_valid(fuzz_bus)


@FUZZ
@given(name=st.text(max_size=70))
def test_any_namespace_name_is_accepted_or_refused_cleanly(
    fuzz_bus: hotparams.Bus, name: str
) -> None:
    try:
        fuzz_bus.register(name, FuzzParams)
    except hotparams.InvalidNamespace:
        return
    assert fuzz_bus.get(name).version == 1
