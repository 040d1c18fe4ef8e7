"""Checks before writes, proven per function: every hp_* function of the
library, provoked with bad arguments, answers an error reply and leaves the
namespace (fleet keys included) byte-for-byte as it was.

``REFUSALS`` must name every function the library registers: a function
added later fails ``test_every_library_function_has_refusal_cases`` until
its refusals are listed here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

import hotparams
from hotparams.library import LIBRARY_NAME
from tests.helpers import dump_namespace
from tests.models import ChatParams

BAD_UTF8 = b"\xed\xa0\x80"

#: function -> refused calls (ARGV after KEYS[1] = "chat"; a tuple starting
#: with "@ns" names another KEYS[1])
REFUSALS: dict[str, list[tuple[bytes | str, ...]]] = {
    "hp_libversion": [],  # takes nothing, reads nothing: see test_read_only_functions_write_nothing
    "hp_register": [
        ("{not json", "{}"),
        ('{"fields": {}}', "{}"),
        ('{"fields": {"a": {"types": ["integer"]}}}', "[]"),
        ('{"fields": {"a": {"types": ["integer"]}}}', '{"reason": "' + "\ufffd" + '"}', "a"),
        (b'{"fields": {"a": {"types": ["integer"]}}}', b'{"reason": "' + BAD_UTF8 + b'"}'),
        ('{"fields": {"a": {"types": ["integer"]}}}', '{"reason": "\\ud800"}'),
        ("@ns", "bad name!", '{"fields": {"a": {"types": ["integer"]}}}', '{"epoch": "e"}'),
        ("@ns", "fresh", '{"fields": {"a": {"types": ["integer"]}}}', '{"epoch": "e"}', "a", '"x"'),
        ("@ns", "fresh", '{"fields": {"a": {"types": ["integer"]}}}', "{}"),
    ],
    "hp_commit": [
        ("temperature",),
        ("temperature", "5"),
        ("temperature", "NaN"),
        ("temperature", "0x1"),
        ("colour", "1"),
        ("@replace", "1", "temperature", "9"),
        ("a b", "1"),
        ("temperature", "0.5", "@nope", "1"),
        ("temperature", "0.5", "@expect", "x"),
        ("temperature", "0.5", "@expect", "1"),
        ("temperature", "0.5", "@validated", "2"),
        ("temperature", "0.5", "@rid", "bad id!"),
        ("temperature", "0.5", "@reason", BAD_UTF8),
        ("temperature", "0.5", "@author", "x" * 5000),
        ("system_prompt", b'"' + BAD_UTF8 + b'"'),
        ("stop", '["a", 1]'),
        ("stop", '["a", "b", "c", "d", "e"]'),
        ("quiet_from", "20", "quiet_to", "3"),
        ("system_prompt", '"' + "x" * 70000 + '"'),
        ("@variants", "{}", "@op", "variant"),
        ("@variants", '{"salt": "s", "variants": {"b": {"overrides": {"temperature": 9}}}}'),
        ("@variants", '{"salt": "s", "variants": {"b": {"users": ["u", 1]}}}'),
        ("@variants", '{"salt": "s", "variants": {"a": {"users": ["u"]}, "b": {"users": ["u"]}}}'),
        ("@unset", "colour"),
        ("temperature", "0.5", "@op", "nuke"),
        ("@ns", "nope", "temperature", "0.5"),
    ],
    "hp_set": [
        (),
        ("temperature",),
        ("temperature", "warm"),
        ("model", "gpt-5"),
        ("system_prompt", b"hi " + BAD_UTF8),
        ("temperature", "0.5", "@replace", "1"),
        ("temperature", "0.5", "@variants", "{}"),
        ("temperature", "0.5", "@validated", "1"),
        ("temperature", "0.5", "@source", BAD_UTF8),
        ("@reason", "x"),
        ("max_tokens", "1.5"),
        ("max_tokens", "9007199254740993"),
        ("system_prompt", "x" * 70000),
    ],
    "hp_unset": [
        (),
        ("colour",),
        ("a b",),
        ("temperature", "@replace", "1"),
        ("temperature", "@reason"),
        ("temperature", "@reason", BAD_UTF8),
        ("temperature", "@expect", "99"),
    ],
    "hp_rollback": [
        (),
        ("x",),
        ("99",),
        ("1", "temperature", "5"),
        ("1", "@replace", "1"),
        ("1", "@expect", "99"),
        ("1", "@reason", BAD_UTF8),
        ("@ns", "nope", "1"),
    ],
    "hp_report": [
        (),
        ("w1", "{}"),
        ("", "{}", "1000"),
        ("w1", "[]", "1000"),
        ("w1", "{bad", "1000"),
        ("w1", "{}", "0"),
        ("w1", "{}", "1e3"),
        ("w1", b'{"x": "' + BAD_UTF8 + b'"}', "1000"),
        (b"w" + BAD_UTF8, "{}", "1000"),
        ("w1", '{"x": "' + "y" * 5000 + '"}', "1000"),
    ],
    "hp_reports": [
        (),
        ("1000", "default"),
        ("1000", "default", "w1"),
        ("0", "default", "w1", "{}"),
        ("1e3", "default", "w1", "{}"),
        ("1000", "two words", "w1", "{}"),
        ("1000", "default", "w1", "{}", "", "{}"),
        ("1000", "default", "w1", "{}", "w2", "[]"),
        ("1000", "default", "w1", "{}", "w2", b'{"x": "' + BAD_UTF8 + b'"}'),
        ("1000", "default", "w1", "{}", b"w" + BAD_UTF8, "{}"),
        ("1000", "default", "w1", '{"x": "' + "y" * 5000 + '"}'),
        ("1000", "default", *[x for i in range(257) for x in (f"w{i}", "{}")]),
    ],
    "hp_leave": [
        (),
        (b"w" + BAD_UTF8,),
    ],
    "hp_expose": [
        (),
        ("s1", "b"),
        ("s1", "b", "-1"),
        ("s1", "b", "1e3"),
        ("s1", "b", "1", "c", "x"),
        ("s1", "b", "2000000000"),
        ("", "b", "1"),
    ],
    "hp_configure": [
        (),
        ("retention",),
        ("retention", "0"),
        ("retention", "x"),
        ("retention", "99999999"),
        ("colour", "3"),
        ("max_value_bytes", "536870912"),
        ("max_value_bytes", "10"),
        ("retention", "5", "@reason", BAD_UTF8),
        ("retention", "5", "@expect", "99"),
    ],
    "hp_delete": [
        ("temperature", "1"),
        ("@expect", "99"),
        ("@reason", BAD_UTF8),
        ("@nope", "1"),
        ("@ns", "nope"),
    ],
    "hp_migrate": [
        (),
        ("{not json", "{}"),
        ('{"fields": {"temperature": {"types": ["number"]}}}', "{}"),
        ('{"fields": {}}', "{}"),
        (b'{"fields": {"a": {"types": ["integer"]}}}', b'{"reason": "' + BAD_UTF8 + b'"}'),
    ],
    "hp_get": [("x",), ("99",), ("@ns", "nope"), ("@ns", "bad name!")],
    "hp_head": [("@ns", "nope"), ("@ns", "")],
    "hp_show": [("@ns", "nope")],
    "hp_history": [("x",), ("0",), ("@ns", "nope")],
    "hp_info": [("@ns", "nope")],
    "hp_workers": [("x", "10"), ("0", "0"), ("0", "5000"), ("@ns", "bad name!")],
}
READ_ONLY = {"hp_libversion", "hp_get", "hp_head", "hp_show", "hp_history", "hp_info", "hp_workers"}


@pytest.fixture
def chat(redis_url: str) -> Iterator[hotparams.Bus]:
    """A namespace with history, a variant, a worker report and exposure counts."""
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 0.9})
    bus.set_variant("chat", "warm", {"temperature": 1.2}, percent=10)
    bus.client.fcall("hp_report", 1, "chat", "w1", '{"version": 3}', "3600000")
    bus.client.fcall("hp_expose", 1, "chat", "s0", "", "4", "warm", "1")
    yield bus
    bus.close()


def _dump(client: redis.Redis) -> dict[str, object]:
    """Every namespace a refusal could touch, fleet keys included."""
    names = ("chat", "nope", "fresh")
    return {ns: dump_namespace(client, ns, include_fleet=True) for ns in names}


def registered_functions(client: redis.Redis) -> set[str]:
    """The names of the functions the hotparams library registers."""
    libraries = client.function_list(library=LIBRARY_NAME)
    functions = next(v for k, v in _pairs(libraries[0]) if k == "functions")
    return {dict(_pairs(f))["name"] for f in functions}


def _pairs(flat: list[object]) -> list[tuple[str, object]]:
    items = [x.decode() if isinstance(x, bytes) else x for x in flat]
    return list(zip(items[::2], items[1::2], strict=True))


def test_every_library_function_has_refusal_cases(chat: hotparams.Bus) -> None:
    assert registered_functions(chat.client) == set(REFUSALS)


@pytest.mark.parametrize("function", sorted(REFUSALS))
def test_each_function_refuses_bad_arguments_before_writing(
    chat: hotparams.Bus, function: str
) -> None:
    client: redis.Redis = chat.client
    refused = 0
    for call in REFUSALS[function]:
        namespace, args = ("chat", call)
        if call and call[0] == "@ns":
            namespace, args = str(call[1]), call[2:]
        before = _dump(client)
        with pytest.raises(redis.ResponseError) as info:
            client.execute_command("FCALL", function, "1", namespace, *args)
        code = str(info.value).split(" ", 1)[0]
        assert code.startswith("HP_"), (function, call, str(info.value))
        assert _dump(client) == before, (function, call, str(info.value))
        refused += 1
    assert refused == len(REFUSALS[function])


def test_read_only_functions_write_nothing(chat: hotparams.Bus) -> None:
    client: redis.Redis = chat.client
    before = _dump(client)
    client.fcall("hp_libversion", 0, "junk", BAD_UTF8)
    for function in sorted(READ_ONLY - {"hp_libversion"}):
        client.fcall(function, 1, "chat")
    assert _dump(client) == before


def test_the_utf8_and_json_checks_of_register_options_keep_good_text(
    chat: hotparams.Bus,
) -> None:
    rules = json.dumps({"fields": {"a": {"types": ["integer"], "default": "0"}}})
    options = json.dumps({"epoch": "e1", "reason": "café ✓ \U0001f600"}, ensure_ascii=False)
    reply = chat.client.fcall("hp_register", 1, "fresh", rules, options)
    assert [int(x) for x in reply] == [1, 1, 1, 1]
    assert chat.history("fresh", limit=1)[0].reason == "café ✓ \U0001f600"
