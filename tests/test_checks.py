"""Declared cross-field checks hold for every writer, redis-cli included."""

from __future__ import annotations

from typing import ClassVar

import orjson
import pytest
import redis
from pydantic import BaseModel

import hotparams
from hotparams import Check

from .helpers import dump_namespace


class Hours(BaseModel):
    hotparams_checks: ClassVar[tuple[Check, ...]] = (
        Check("quiet_from", "<=", "quiet_to"),
        Check("min_tokens", "<", "max_tokens"),
    )
    quiet_from: int = 0
    quiet_to: int = 0
    min_tokens: int = 1
    max_tokens: int | None = 512


class Loose(BaseModel):
    quiet_from: int = 0
    quiet_to: int = 0
    min_tokens: int = 1
    max_tokens: int | None = 512


@pytest.fixture
def hours(bus: hotparams.Bus) -> hotparams.Bus:
    bus.register("h", Hours)
    bus.set("h", {"quiet_to": 8})
    return bus


def test_every_writer_is_held_to_the_declared_checks(hours: hotparams.Bus) -> None:
    before = dump_namespace(hours.client, "h")
    message = "quiet_from must be <= quiet_to"
    for writer in (hours, hotparams.Bus(hours.client)):  # with and without the model
        with pytest.raises(hotparams.InvalidParams) as info:
            writer.set("h", {"quiet_from": 10})
        assert info.value.errors == {"*": message}
    with pytest.raises(redis.ResponseError) as raw:
        hours.client.fcall("hp_set", 1, "h", "quiet_from", "10")
    assert str(raw.value) == f"HP_INVALID *: {message}"
    assert dump_namespace(hours.client, "h") == before
    assert hours.client.fcall("hp_set", 1, "h", "quiet_from", "8") == 3  # equal is fine


def test_a_null_side_passes_and_both_failures_are_named(hours: hotparams.Bus) -> None:
    assert hours.set("h", {"max_tokens": None, "min_tokens": 900}) == 3
    with pytest.raises(hotparams.InvalidParams) as info:
        hotparams.Bus(hours.client).set("h", {"max_tokens": 100, "quiet_from": 9})
    assert info.value.errors["*"] == (
        "quiet_from must be <= quiet_to; min_tokens must be < max_tokens"
    )


def test_variants_are_checked_merged_with_the_base(hours: hotparams.Bus) -> None:
    before = dump_namespace(hours.client, "h")
    with pytest.raises(hotparams.InvalidParams) as info:
        hours.set_variant("h", "night", {"quiet_from": 9}, percent=10)
    assert "variant night *" in info.value.errors
    doc = {"salt": "s", "variants": {"night": {"overrides": {"quiet_from": 9}}}}
    with pytest.raises(redis.ResponseError, match=r"variant night \*: quiet_from must be"):
        hours.client.fcall("hp_commit", 1, "h", "@variants", orjson.dumps(doc).decode())
    assert dump_namespace(hours.client, "h") == before
    # and a base change that would break a variant is refused by Redis too
    hours.set_variant("h", "night", {"quiet_from": 6}, percent=10)
    with pytest.raises(redis.ResponseError, match=r"variant night \*"):
        hours.client.fcall("hp_set", 1, "h", "quiet_to", "5")


def test_a_model_whose_checks_the_stored_values_break_is_refused(bus: hotparams.Bus) -> None:
    bus.register("h", Loose)
    bus.set("h", {"quiet_from": 20, "quiet_to": 5})
    before = dump_namespace(bus.client, "h")
    with pytest.raises(hotparams.InvalidParams, match="quiet_from must be <= quiet_to"):
        bus.register("h", Hours)
    assert dump_namespace(bus.client, "h") == before


def test_checks_must_name_comparable_fields() -> None:
    class Unknown(BaseModel):
        hotparams_checks: ClassVar[tuple[Check, ...]] = (Check("a", "<", "nope"),)
        a: int = 0

    class Mixed(BaseModel):
        hotparams_checks: ClassVar[tuple[Check, ...]] = (Check("a", "<", "b"),)
        a: int = 0
        b: str = ""

    for model in (Unknown, Mixed):
        with pytest.raises(hotparams.SchemaError):
            hotparams.ParamSchema.of(model)
    with pytest.raises(ValueError, match="operator"):
        Check("a", "=<", "b")
