"""Strict UTF-8 at every depth, for every writer; readers that meet bytes
which are not UTF-8 anyway (a raw HSET/XADD) fail cleanly or keep going."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import hotparams
from hotparams.keys import keys_for
from tests.helpers import dump_namespace, wait_until
from tests.models import ChatParams

from .test_cli import run_cli

#: malformed under RFC 3629 (Python's strict decoder refuses each)
BAD_SEQUENCES = {
    "surrogate-high": b"\xed\xa0\x80",
    "surrogate-low": b"\xed\xbf\xbf",
    "overlong-c0": b"\xc0\xaf",
    "overlong-c1": b"\xc1\xbf",
    "overlong-e0": b"\xe0\x80\xaf",
    "overlong-e0-9f": b"\xe0\x9f\xbf",
    "overlong-f0": b"\xf0\x80\x80\xaf",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5": b"\xf5\x80\x80\x80",
    "ff": b"\xff",
    "lone-continuation": b"\x80",
    "truncated": b"\xe2\x82",
}
#: the edges that are valid: U+0080, U+07FF, U+0800, U+D7FF, U+E000, U+FFFF, U+10000, U+10FFFF
GOOD_EDGES = [
    "\u0080",
    "\u07ff",
    "\u0800",
    "\ud7ff",
    "\ue000",
    "\uffff",
    "\U00010000",
    "\U0010ffff",
]


@pytest.fixture
def chat(redis_url: str) -> Iterator[hotparams.Bus]:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    yield bus
    bus.close()


def _refused(client: redis.Redis, *call: bytes | str) -> str:
    before = dump_namespace(client, "chat")
    with pytest.raises(redis.ResponseError) as info:
        client.execute_command(*call)
    assert dump_namespace(client, "chat") == before
    return str(info.value)


def test_every_bad_sequence_is_malformed_for_python_too() -> None:
    for raw in BAD_SEQUENCES.values():
        with pytest.raises(UnicodeDecodeError):
            raw.decode()


@pytest.mark.parametrize("bad", list(BAD_SEQUENCES.values()), ids=list(BAD_SEQUENCES))
def test_malformed_utf8_is_refused_at_every_depth_and_in_every_option(
    chat: hotparams.Bus, bad: bytes
) -> None:
    client = chat.client
    fcall = ("FCALL", "hp_set", "1", "chat")
    commit = ("FCALL", "hp_commit", "1", "chat")
    # a plain string, a JSON string, a string inside an array
    assert "not valid UTF-8" in _refused(client, *fcall, "system_prompt", b"Hi " + bad)
    assert "not valid UTF-8" in _refused(client, *commit, "system_prompt", b'"' + bad + b'"')
    assert "not valid UTF-8" in _refused(client, *fcall, "stop", b'["ok", "' + bad + b'"]')
    assert "not valid UTF-8" in _refused(client, *commit, "stop", b'["' + bad + b'"]')
    # the options every writer sends to the audit
    for option in ("@author", "@reason", "@source"):
        message = _refused(client, *fcall, "max_tokens", "100", option, b"x" + bad)
        assert message.startswith("HP_BADARG " + option)
    # an A/B variants document: a variant's user, an override's string
    doc = {"salt": "s1", "variants": {"b": {"users": ["u-XX"], "overrides": {}}}}
    text = json.dumps(doc).encode().replace(b"XX", bad)
    assert "not valid UTF-8" in _refused(client, *commit, "@variants", text, "@op", "variant")
    doc = {"salt": "s1", "variants": {"b": {"users": ["u1"], "overrides": {"stop": ["XX"]}}}}
    text = json.dumps(doc).encode().replace(b"XX", bad)
    assert "not valid UTF-8" in _refused(client, *commit, "@variants", text, "@op", "variant")


def test_the_valid_edges_of_utf8_are_accepted_at_every_depth(chat: hotparams.Bus) -> None:
    client = chat.client
    prompt = "edge " + "".join(GOOD_EDGES)
    v = client.fcall("hp_set", 1, "chat", "system_prompt", prompt, "@reason", prompt)
    client.fcall("hp_commit", 1, "chat", "stop", json.dumps(GOOD_EDGES[:4], ensure_ascii=False))
    snap = chat.get("chat")
    assert snap.values["system_prompt"] == prompt
    assert snap.values["stop"] == GOOD_EDGES[:4]
    assert chat.history("chat", limit=2)[1].reason == prompt and v == 2


# ------------------------------------------------------------------ readers


def _plant_damaged_version(client: redis.Redis, field: str, raw: bytes) -> int:
    """A version written around the functions (a raw HSET): a copy of the
    current one with ``field`` holding ``raw``; returns its number."""
    keys = keys_for("chat")
    head = int(client.hget(keys.meta, "version"))
    current = client.hgetall(keys.version(head))
    client.hset(keys.version(head + 1), mapping={**current, field.encode(): raw})
    client.hset(keys.meta, "version", head + 1)
    return head + 1


def test_a_damaged_version_is_an_error_from_get_and_from_the_cli(
    chat: hotparams.Bus, redis_url: str
) -> None:
    bad = _plant_damaged_version(chat.client, "system_prompt", b'"\xed\xa0\x80"')
    with pytest.raises(hotparams.InvalidParams) as info:
        chat.get("chat")
    assert "not UTF-8" in info.value.errors["system_prompt"]
    with pytest.raises(hotparams.InvalidParams):
        hotparams.Bus(chat.client).get("chat")  # without the model too
    result = run_cli(redis_url, "get", "chat")
    assert result.code == 3, result
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert "system_prompt" in result.err and "not UTF-8" in result.err
    # the version before it still reads
    assert chat.get("chat", version=bad - 1).version == bad - 1


def test_a_live_keeps_its_last_good_snapshot_and_says_why_on_damaged_bytes(
    chat: hotparams.Bus,
) -> None:
    with chat.watch("chat", ChatParams) as live:
        good = chat.set("chat", {"system_prompt": "good"})
        assert live.wait_for(good)
        bad = _plant_damaged_version(chat.client, "system_prompt", b'"\xed\xa0\x80"')
        chat.client.spublish(keys_for("chat").channel, b"not an event")  # makes it re-read
        assert wait_until(lambda: live.rejected is not None and live.rejected.version == bad)
        assert live.current.version == good
        assert live.current.params.system_prompt == "good"
        status = live.status()
        assert status.connected and status.stale and status.rejected is not None
        assert "not UTF-8" in status.rejected.errors["system_prompt"]
        # a write on top of it is refused (its content no longer matches its
        # digest, tests/test_partial_loss.py); a rollback repairs it
        with pytest.raises(hotparams.NamespaceDamaged):
            chat.set("chat", {"system_prompt": "fixed"})
        chat.rollback("chat", good)
        # still following: the next real change is applied
        fixed = chat.set("chat", {"system_prompt": "fixed"})
        assert live.wait_for(fixed)
        assert live.current.params.system_prompt == "fixed" and live.rejected is None


def test_a_new_worker_starts_from_its_cache_when_the_head_is_damaged(
    chat: hotparams.Bus, tmp_path: Path
) -> None:
    cache = tmp_path / "chat.json"
    with chat.watch("chat", ChatParams, cache=cache) as live:
        good = chat.set("chat", {"system_prompt": "cached"})
        assert live.wait_for(good)
        assert wait_until(
            lambda: cache.exists() and json.loads(cache.read_bytes())["version"] == good
        )
    _plant_damaged_version(chat.client, "system_prompt", b'"\xc0\xaf"')
    with chat.watch("chat", ChatParams, cache=cache) as fresh:
        assert fresh.current.version == good
        assert fresh.current.params.system_prompt == "cached"
        assert fresh.rejected is not None


def test_history_shows_damaged_audit_bytes_escaped_and_says_so(
    chat: hotparams.Bus, redis_url: str
) -> None:
    chat.set("chat", {"max_tokens": 99}, reason="fine")
    keys = keys_for("chat")
    entry = {"v": "3", "prev": "2", "op": "set", "author": "x", "source": "redis"}
    chat.client.xadd(keys.audit, {**entry, "reason": b"bad \xed\xa0\x80 byte", "changes": "{}"})
    changes = chat.history("chat", limit=5)
    assert changes[0].reason == "bad \\xed\\xa0\\x80 byte"
    assert changes[0].damaged == ("reason",)
    assert changes[1].reason == "fine" and changes[1].damaged == ()
    result = run_cli(redis_url, "history", "chat")
    assert result.code == 0, result
    assert "bad \\\\xed\\\\xa0\\\\x80 byte" in result.out  # escaped, then JSON-quoted
    assert "damaged: reason not UTF-8" in result.out
    result = run_cli(redis_url, "history", "chat", "--json")
    assert result.code == 0 and result.json()[0]["damaged"] == ["reason"]
