"""Bad input is a clear error naming the field, and changes nothing.

Every case runs through three writers: a Bus that knows the model (full
pydantic validation first), a Bus that does not (the Lua rules alone), and
a raw ``FCALL hp_set`` as typed at redis-cli.  After each, the namespace's
keys are byte-for-byte what they were.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

import hotparams

from .helpers import dump_namespace
from .models import ChatParams

# (changes, the field named in the error, a word of the reason)
BAD_VALUES: list[tuple[dict[str, Any], str, str]] = [
    ({"temperature": "hot"}, "temperature", "number"),
    ({"temperature": 2.5}, "temperature", "2"),
    ({"temperature": -0.1}, "temperature", "0"),
    ({"top_p": 0}, "top_p", "0"),  # exclusive minimum
    ({"max_tokens": 0}, "max_tokens", "1"),
    ({"max_tokens": 1.5}, "max_tokens", "integer"),
    ({"max_tokens": 10**6}, "max_tokens", "32000"),
    ({"model": "gpt-5"}, "model", "gpt-4o"),
    ({"tone": "angry"}, "tone", "plain"),
    ({"system_prompt": ""}, "system_prompt", "1"),
    ({"system_prompt": "x" * 4001}, "system_prompt", "4000"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "4"),
    ({"stop": "not a list"}, "stop", "array"),
    ({"stop": [1, 2]}, "stop", "string"),
    ({"streaming": "maybe"}, "streaming", "boolean"),
    ({"colour": "red"}, "colour", "unknown field"),
]


def _fcall_args(changes: dict[str, Any]) -> list[str]:
    import orjson

    args: list[str] = []
    for name, value in changes.items():
        args += [name, value if isinstance(value, str) else orjson.dumps(value).decode()]
    return args


@pytest.fixture
def chat(bus: hotparams.Bus) -> hotparams.Bus:
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 0.4})
    return bus


@pytest.mark.parametrize(("changes", "field", "word"), BAD_VALUES)
def test_a_bad_value_is_refused_by_every_writer(
    chat: hotparams.Bus, changes: dict[str, Any], field: str, word: str
) -> None:
    before = dump_namespace(chat.client, "chat")
    plain = hotparams.Bus(chat.client)
    for writer in (chat, plain):
        with pytest.raises(hotparams.InvalidParams) as info:
            writer.set("chat", changes)
        assert field in info.value.errors, info.value.errors
    # the Lua rules' own wording (pydantic words its messages its own way)
    assert word in info.value.errors[field]
    if not (field == "system_prompt" and changes[field] == ""):
        # at redis-cli a string field takes plain text, so "hot" for a number
        # is refused, while "" is a plain empty string (refused by its length)
        with pytest.raises(redis.ResponseError) as raw_info:
            chat.client.fcall("hp_set", 1, "chat", *_fcall_args(changes))
        assert str(raw_info.value).startswith("HP_INVALID")
        assert field in str(raw_info.value)
    assert dump_namespace(chat.client, "chat") == before


def test_a_cross_field_rule_is_checked_by_python_writers(chat: hotparams.Bus) -> None:
    before = dump_namespace(chat.client, "chat")
    with pytest.raises(hotparams.InvalidParams) as info:
        chat.set("chat", {"quiet_from": 10, "quiet_to": 2})
    assert info.value.errors == {"*": "quiet_from must be <= quiet_to"}
    assert dump_namespace(chat.client, "chat") == before


def test_several_bad_fields_are_all_named(chat: hotparams.Bus) -> None:
    with pytest.raises(hotparams.InvalidParams) as info:
        hotparams.Bus(chat.client).set("chat", {"temperature": 9, "max_tokens": -1, "x": 1})
    assert set(info.value.errors) == {"temperature", "max_tokens", "x"}


@pytest.mark.parametrize("name", ["", "a b", "{chat}", "chat:1", "-x", "é", "x" * 65, "a*"])
def test_a_malformed_namespace_is_refused(chat: hotparams.Bus, name: str) -> None:
    before = dump_namespace(chat.client, "chat")
    with pytest.raises(hotparams.InvalidNamespace) as info:
        chat.set(name, {"temperature": 0.5})
    assert isinstance(info.value, ValueError)
    with pytest.raises(hotparams.InvalidNamespace):
        chat.register(name, ChatParams)
    if name:
        with pytest.raises(redis.ResponseError, match="HP_BADARG namespace"):
            chat.client.fcall("hp_set", 1, name, "temperature", "0.5")
    assert dump_namespace(chat.client, "chat") == before
    assert sorted(chat.client.keys("hp:*")) == sorted(chat.client.keys("hp:{chat}:*"))


def test_an_oversized_value_is_refused(bus: hotparams.Bus) -> None:
    from pydantic import BaseModel

    class Prompts(BaseModel):
        prompt: str = ""

    bus.register("p", Prompts, max_value_bytes=1000)
    before = dump_namespace(bus.client, "p")
    for writer in (bus, hotparams.Bus(bus.client)):
        with pytest.raises(hotparams.InvalidParams) as info:
            writer.set("p", {"prompt": "x" * 1000})  # 1002 bytes as JSON
        assert "1000" in info.value.errors["prompt"]
    assert dump_namespace(bus.client, "p") == before
    assert bus.set("p", {"prompt": "x" * 998}) == 2


def test_non_json_numbers_are_refused_at_redis_cli(chat: hotparams.Bus) -> None:
    before = dump_namespace(chat.client, "chat")
    for value in ["NaN", "Infinity", "-inf", "0x10", "1e400", "1.", ".5", "01", "+1"]:
        with pytest.raises(redis.ResponseError, match="HP_INVALID temperature"):
            chat.client.fcall("hp_set", 1, "chat", "temperature", value)
    with pytest.raises(hotparams.InvalidParams):
        hotparams.Bus(chat.client).set("chat", {"temperature": float("nan")})
    assert dump_namespace(chat.client, "chat") == before


@pytest.mark.parametrize(
    "args",
    [
        ["temperature"],  # odd number of arguments
        ["@bogus", "1"],
        ["temperature", "0.5", "@expect", "two"],
    ],
)
def test_malformed_calls_are_refused(chat: hotparams.Bus, args: list[str]) -> None:
    before = dump_namespace(chat.client, "chat")
    with pytest.raises(redis.ResponseError, match="HP_BADARG"):
        chat.client.fcall("hp_set", 1, "chat", *args)
    assert dump_namespace(chat.client, "chat") == before


def test_invalid_utf8_is_refused(chat: hotparams.Bus) -> None:
    before = dump_namespace(chat.client, "chat")
    with pytest.raises(redis.ResponseError, match="UTF-8"):
        chat.client.fcall("hp_set", 1, "chat", "system_prompt", b"\xff\xfe bad")
    for raw in ['"\\ud800"', '"a\\x"', '"unterminated']:
        with pytest.raises(redis.ResponseError, match="HP_INVALID"):
            chat.client.fcall("hp_commit", 1, "chat", "system_prompt", raw)
    assert dump_namespace(chat.client, "chat") == before


def test_bad_expect_version_values_are_refused(chat: hotparams.Bus) -> None:
    for bad in (-1, "3", 1.5, True):
        with pytest.raises(hotparams.InvalidParams):
            chat.set("chat", {"temperature": 0.5}, expect_version=bad)  # type: ignore[arg-type]


def test_settings_are_checked(redis_url: str) -> None:
    with pytest.raises(hotparams.ConfigError, match="retension"):
        hotparams.connect(redis_url, retension=5)
    with pytest.raises(hotparams.ConfigError, match="retention"):
        hotparams.connect(redis_url, retention=0)


def test_models_that_cannot_be_parameter_sets_are_refused(bus: hotparams.Bus) -> None:
    from pydantic import BaseModel

    class Empty(BaseModel):
        pass

    class Required(BaseModel):
        name: str

    with pytest.raises(hotparams.SchemaError):
        bus.register("e", Empty)
    with pytest.raises(hotparams.SchemaError):
        bus.register("e", dict)  # type: ignore[arg-type]
    with pytest.raises(hotparams.InvalidParams) as info:
        bus.register("r", Required)  # no default and no initial value
    assert "name" in info.value.errors
    assert bus.register("r", Required, initial={"name": "x"}).version == 1
    assert list(bus.client.scan_iter(match="hp:{e}:*")) == []
