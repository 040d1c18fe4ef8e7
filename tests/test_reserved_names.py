"""Field names never collide with options: "@name" is an option for every
writer, and a writer's field called "@replace" is refused, not obeyed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

import hotparams
from tests.helpers import dump_namespace
from tests.models import ChatParams

from .test_cli import run_cli

RESERVED = ["@replace", "@reason", "@expect", "@base", "@unset", "@variants", "@validated", "@x"]


@pytest.fixture
def chat(bus: hotparams.Bus) -> Iterator[hotparams.Bus]:
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 1.5, "max_tokens": 99})
    yield bus


@pytest.mark.parametrize("name", RESERVED)
@pytest.mark.parametrize("with_model", [True, False], ids=["model", "no-model"])
def test_an_option_name_as_a_field_is_invalid_for_python_writers(
    chat: hotparams.Bus, name: str, with_model: bool
) -> None:
    writer = chat if with_model else hotparams.Bus(chat.client)
    before = dump_namespace(chat.client, "chat")
    for changes in ({name: 1}, {"temperature": 0.2, name: "x"}):
        with pytest.raises(hotparams.InvalidParams) as info:
            writer.set("chat", changes)
        assert "not a field name" in info.value.errors[name]
    with pytest.raises(hotparams.InvalidParams):
        writer.unset("chat", [name])
    with pytest.raises(hotparams.InvalidParams):
        writer.set_variant("chat", "b", {name: 1}, percent=10)
    assert dump_namespace(chat.client, "chat") == before
    assert chat.get("chat").values["temperature"] == 1.5


def test_names_that_are_not_identifiers_are_refused_by_every_function(
    chat: hotparams.Bus,
) -> None:
    client: redis.Redis = chat.client
    before = dump_namespace(client, "chat")
    for function in ("hp_set", "hp_commit"):
        for name in ("", "a b", "1x", "x.y", "é", "x" * 129):
            with pytest.raises(redis.ResponseError, match="not a field name"):
                client.fcall(function, 1, "chat", name, "1")
    for name in ("a b", "x-y"):
        with pytest.raises(redis.ResponseError, match="not a field name"):
            client.fcall("hp_unset", 1, "chat", name)
        with pytest.raises(redis.ResponseError, match="not a field name"):
            client.fcall("hp_commit", 1, "chat", "@unset", name)
    assert dump_namespace(client, "chat") == before


@pytest.mark.parametrize("option", ["@replace", "@op", "@variants", "@base", "@validated"])
def test_redis_cli_edits_take_only_the_documented_options(chat: hotparams.Bus, option: str) -> None:
    client: redis.Redis = chat.client
    before = dump_namespace(client, "chat")
    with pytest.raises(redis.ResponseError, match="HP_BADARG unknown option"):
        client.fcall("hp_set", 1, "chat", "temperature", "0.3", option, "1")
    with pytest.raises(redis.ResponseError, match="HP_BADARG unknown option"):
        client.fcall("hp_unset", 1, "chat", "temperature", option, "1")
    assert dump_namespace(client, "chat") == before
    # the documented form keeps working
    v = client.fcall("hp_set", 1, "chat", "temperature", "0.3", "@author", "ana", "@reason", "r")
    assert chat.get("chat").version == v and chat.history("chat", limit=1)[0].author == "ana"


@pytest.mark.parametrize("schema", [None, "tests.models:ChatParams"], ids=["raw", "schema"])
def test_the_cli_refuses_option_names_as_fields(redis_url: str, schema: str | None) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    before = dump_namespace(bus.client, "chat")
    extra = ["--schema", schema] if schema else []
    for item in ("@replace=1", "@reason=x", "@expect=1"):
        result = run_cli(redis_url, "set", "chat", item, *extra)
        assert result.code in (2, 3), result
        assert "Traceback" not in result.err and result.err.count("\n") == 1
    assert dump_namespace(bus.client, "chat") == before
    bus.close()
