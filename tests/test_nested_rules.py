"""Redis enforces the model at every depth for raw writers (redis-cli, a Bus
without the model, the CLI without --schema), for base values and variant
overrides alike; what only Python can check is refused to raw writers,
unless the namespace opted in with ``allow_raw_writes``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pytest
import redis
from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

import hotparams
from hotparams.schema import compile_rules
from tests.helpers import dump_namespace

from .test_cli import run_cli


class Limits(BaseModel):
    rpm: int = Field(60, ge=1, le=10_000)
    burst: int | None = None


class Route(BaseModel):
    name: str = Field(min_length=1, max_length=16)
    weight: float = Field(1.0, ge=0, le=1)
    tier: Literal["free", "pro"] = "free"


class Nested(BaseModel):
    meta: dict[str, int] = Field(default_factory=dict)
    limits: Limits = Limits()
    routes: list[Route] = Field(default_factory=list, max_length=3)
    pair: tuple[int, str] = (1, "a")
    either: int | list[str] = 0
    maybe: Limits | None = None
    tags: dict[Annotated[str, Field(max_length=3)], list[bool]] = Field(default_factory=dict)


#: (field, raw JSON) pairs the model refuses, each at some depth
BAD = [
    ("meta", '{"a": "x"}'),
    ("meta", '{"a": 1.5}'),
    ("meta", "[]"),
    ("limits", '{"rpm": 0}'),
    ("limits", '{"burst": "x"}'),
    ("limits", "[]"),
    ("routes", '[{"weight": 0.5}]'),
    ("routes", '[{"name": ""}]'),
    ("routes", '[{"name": "a", "tier": "gold"}]'),
    ("routes", '[{"name": "a", "weight": 2}]'),
    ("routes", '[{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]'),
    ("routes", '{"name": "a"}'),
    ("pair", "[1, 2]"),
    ("pair", '[1, "a", 3]'),
    ("pair", '["a", 1]'),
    ("either", '"text"'),
    ("either", "[1]"),
    ("maybe", '{"rpm": -1}'),
    ("tags", '{"long": [true]}'),
    ("tags", '{"a": {}}'),
]
GOOD = [
    ("meta", '{"a": 1, "b": -2}'),
    ("limits", '{"rpm": 5, "burst": null}'),
    ("routes", '[{"name": "a", "weight": 0.5, "tier": "pro"}, {"name": "b"}]'),
    ("pair", '[2, "b"]'),
    ("either", '["x", "y"]'),
    ("maybe", "null"),
    ("tags", '{"abc": [true, false], "": []}'),
]


def _model_refuses(field: str, raw: str) -> bool:
    try:
        Nested.model_validate({field: json.loads(raw)})
    except ValueError:
        return True
    return False


def test_the_cases_are_what_they_claim() -> None:
    assert all(_model_refuses(f, r) for f, r in BAD)
    assert not any(_model_refuses(f, r) for f, r in GOOD)


@pytest.fixture
def nested(bus: hotparams.Bus) -> Iterator[hotparams.Bus]:
    bus.register("nest", Nested)
    yield bus


@pytest.mark.parametrize(("field", "raw"), BAD, ids=[f"{f}={r}" for f, r in BAD])
def test_raw_writers_cannot_store_what_the_model_refuses_at_any_depth(
    nested: hotparams.Bus, field: str, raw: str
) -> None:
    client: redis.Redis = nested.client
    plain = hotparams.Bus(client)  # a Bus without the model
    before = dump_namespace(client, "nest")
    for function in ("hp_set", "hp_commit"):
        with pytest.raises(redis.ResponseError, match=f"HP_INVALID {field}: "):
            client.fcall(function, 1, "nest", field, raw)
    with pytest.raises(hotparams.InvalidParams) as info:
        plain.set("nest", {field: json.loads(raw)})
    assert field in info.value.errors
    doc = {"salt": "s", "variants": {"b": {"buckets": [[0, 100]], "overrides": {field: "X"}}}}
    text = json.dumps(doc).replace('"X"', raw)
    with pytest.raises(redis.ResponseError, match=f"HP_INVALID variant b {field}: "):
        client.fcall("hp_commit", 1, "nest", "@variants", text, "@op", "variant")
    with pytest.raises(hotparams.InvalidParams):
        plain.set_variant("nest", "b", {field: json.loads(raw)}, percent=5)
    assert dump_namespace(client, "nest") == before


@pytest.mark.parametrize(("field", "raw"), GOOD, ids=[f"{f}={r}" for f, r in GOOD])
def test_what_the_model_accepts_raw_writers_may_store(
    nested: hotparams.Bus, field: str, raw: str
) -> None:
    client: redis.Redis = nested.client
    v = client.fcall("hp_commit", 1, "nest", field, raw)
    snap = nested.get("nest")  # read back with the model
    assert snap.version == v
    assert getattr(snap.params, field) == getattr(
        Nested.model_validate({field: json.loads(raw)}), field
    )


def test_the_cli_without_schema_is_held_to_the_nested_rules(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("nest", Nested)
    before = dump_namespace(bus.client, "nest")
    for field, raw in BAD[:6]:
        result = run_cli(redis_url, "set", "nest", f"{field}={raw}")
        assert result.code == 3, result
        assert field in result.err and "Traceback" not in result.err
    assert dump_namespace(bus.client, "nest") == before
    assert run_cli(redis_url, "set", "nest", 'meta={"a": 3}').code == 0
    assert bus.get("nest").values["meta"] == {"a": 3}
    bus.close()


# ------------------------------------------------------------------ Python-only


def _even(value: int) -> int:
    if value % 2:
        raise ValueError("must be even")
    return value


class Checked(BaseModel):
    plain: int = 0
    code: str = Field("ab", pattern=r"^[a-z]+$")
    even: Annotated[int, AfterValidator(_even)] = 0
    word: str = "x"

    @field_validator("word")
    @classmethod
    def no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError("no spaces")
        return value


class Validated(BaseModel):
    low: int = 0
    high: int = 0

    @model_validator(mode="after")
    def ordered(self) -> Validated:
        if self.low > self.high:
            raise ValueError("low must be <= high")
        return self


def test_the_rules_record_what_only_python_checks() -> None:
    fields = compile_rules(Checked)["fields"]
    assert "pattern" in fields["code"]["py"]
    assert "AfterValidator" in fields["even"]["py"]
    assert "no_spaces" in fields["word"]["py"]
    assert "py" not in fields["plain"]
    assert "py" not in compile_rules(Checked)
    assert "ordered" in compile_rules(Validated)["py"]
    assert "py" not in compile_rules(Nested) and not any(
        "py" in r for r in compile_rules(Nested)["fields"].values()
    )


@pytest.mark.parametrize(
    ("field", "value"), [("code", "AB"), ("even", 3), ("word", "a b")], ids=["pattern", "an", "fv"]
)
def test_raw_writers_are_refused_on_python_only_fields_with_a_reason(
    bus: hotparams.Bus, field: str, value: Any
) -> None:
    bus.register("chk", Checked)
    client: redis.Redis = bus.client
    plain = hotparams.Bus(client)
    before = dump_namespace(client, "chk")
    with pytest.raises(redis.ResponseError, match="checked by Python only") as info:
        client.fcall("hp_set", 1, "chk", field, json.dumps(value))
    assert "allow_raw_writes" in str(info.value) and "with the model" in str(info.value)
    with pytest.raises(hotparams.InvalidParams, match="checked by Python only"):
        plain.set("chk", {field: value})
    with pytest.raises(hotparams.InvalidParams, match="checked by Python only"):
        plain.set_variant("chk", "b", {field: value}, percent=5)
    # the model refuses the value too, the same way a raw writer is told to use it
    with pytest.raises(hotparams.InvalidParams):
        bus.set("chk", {field: value})
    assert dump_namespace(client, "chk") == before
    # fields Lua checks whole stay open to raw writers; the model writer writes all
    client.fcall("hp_set", 1, "chk", "plain", "7")
    good = {"code": "xyz", "even": 4, "word": "ok"}[field]
    v = bus.set("chk", {field: good})
    assert bus.get("chk").values[field] == good and bus.get("chk").version == v


def test_a_model_validator_closes_the_namespace_to_raw_writers_unless_allowed(
    bus: hotparams.Bus,
) -> None:
    bus.register("val", Validated)
    client: redis.Redis = bus.client
    before = dump_namespace(client, "val")
    for call in (("hp_set", "low", "5"), ("hp_commit", "low", "5"), ("hp_unset", "low")):
        with pytest.raises(redis.ResponseError, match="HP_INVALID \\*: this namespace is checked"):
            client.fcall(call[0], 1, "val", *call[1:])
    with pytest.raises(redis.ResponseError, match="checked by Python only"):
        client.fcall("hp_rollback", 1, "val", "1")
    assert dump_namespace(client, "val") == before
    # a Bus without the model is told once, under "*", not in pieces of the text
    with pytest.raises(hotparams.InvalidParams) as info:
        hotparams.Bus(client).set("val", {"low": 5})
    assert list(info.value.errors) == ["*"]
    assert "ordered" in info.value.errors["*"] and "hotparams.Check" in info.value.errors["*"]
    v = bus.set("val", {"low": 1, "high": 2})  # the Python writer with the model
    assert bus.rollback("val", 1) == v + 1
    # the documented opt-in: raw writers then meet the Lua rules alone
    bus.register("val", Validated, allow_raw_writes=True)
    assert isinstance(client.fcall("hp_set", 1, "val", "low", "5"), int)


def test_the_cli_with_schema_writes_python_only_fields(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("nest", Nested)
    result = run_cli(
        redis_url, "set", "nest", 'limits={"rpm": 7}', "--schema", "tests.test_nested_rules:Nested"
    )
    assert result.code == 0, result
    assert bus.get("nest").params.limits.rpm == 7
    bus.close()
