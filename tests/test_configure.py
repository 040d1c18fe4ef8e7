"""Settings are operations: retention, audit length and value size change
only through configure (checked, capped, audited), never by registering."""

from __future__ import annotations

import pytest
import redis

import hotparams
from hotparams.codec import dumps
from hotparams.config import SETTING_CAPS
from hotparams.keys import keys_for
from hotparams.library import library_source
from hotparams.schema import ParamSchema

from .helpers import dump_namespace
from .models import ChatParams


def fcall(client: redis.Redis, function: str, ns: str, *args: str) -> object:
    return client.execute_command("FCALL", function, "1", ns, *args)  # type: ignore[no-untyped-call]


def meta(bus: hotparams.Bus, ns: str) -> dict[str, str]:
    raw = bus.client.hgetall(keys_for(ns).meta)
    return {k.decode(): v.decode() for k, v in raw.items()}


def test_configure_changes_settings_and_leaves_an_audit_entry(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    for i in range(10):
        bus.set("chat", {"max_tokens": 100 + i})
    settings = bus.configure("chat", retention=3, author="ops", reason="save memory")
    assert settings == hotparams.NamespaceSettings(3, 10_000, 65_536)
    keys = keys_for("chat")
    kept = sorted(
        int(k.decode().rsplit(":", 1)[1]) for k in bus.client.scan_iter(keys.version("*"))
    )
    assert kept == [9, 10, 11]  # trimmed at once, not on the next write
    assert (meta(bus, "chat")["retention"], meta(bus, "chat")["oldest"]) == ("3", "9")
    change = bus.history("chat", limit=1)[0]
    assert (change.op, change.author, change.reason, change.version) == (
        "configure",
        "ops",
        "save memory",
        11,
    )
    assert change.settings == {"retention": hotparams.FieldChange(100, 3)}
    assert bus.head("chat").version == 11  # no new version: values did not change


def test_configure_with_the_same_settings_writes_nothing(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    before = dump_namespace(bus.client, "chat")
    assert bus.configure("chat", retention=100).retention == 100
    assert dump_namespace(bus.client, "chat") == before


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("retention", 0),
        ("retention", 10_001),
        ("audit_maxlen", 1),
        ("audit_maxlen", 1_000_001),
        ("max_value_bytes", 536_870_912),
        ("max_value_bytes", 0),
    ],
)
def test_settings_beyond_their_caps_are_refused_by_every_writer(
    bus: hotparams.Bus, name: str, value: int
) -> None:
    bus.register("chat", ChatParams)
    before = dump_namespace(bus.client, "chat")
    low, high = SETTING_CAPS[name]
    with pytest.raises(hotparams.ConfigError, match=f"{name} must be an integer from"):
        bus.configure("chat", **{name: value})
    with pytest.raises(
        redis.ResponseError, match=f"{name} must be an integer from {low} to {high}"
    ):
        fcall(bus.client, "hp_configure", "chat", name, str(value))
    with pytest.raises(hotparams.ConfigError):
        bus.register("other", ChatParams, **{name: value})
    assert dump_namespace(bus.client, "chat") == before
    assert dump_namespace(bus.client, "other") == {}


def test_a_value_size_limit_below_a_stored_value_is_refused(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    bus.set("chat", {"system_prompt": "x" * 1000})
    before = dump_namespace(bus.client, "chat")
    with pytest.raises(hotparams.InvalidParams) as info:
        bus.configure("chat", max_value_bytes=500)
    assert "system_prompt" in info.value.errors
    assert dump_namespace(bus.client, "chat") == before
    assert bus.configure("chat", max_value_bytes=2000).max_value_bytes == 2000


def test_a_lower_audit_maxlen_trims_the_audit_and_records_itself(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    for i in range(300):
        bus.set("chat", {"max_tokens": 100 + i})
    bus.configure("chat", audit_maxlen=100, reason="smaller audit")
    history = bus.history("chat", limit=10_000)
    assert 100 <= len(history) < 301
    assert history[0].op == "configure"
    assert history[0].settings == {"audit_maxlen": hotparams.FieldChange(10_000, 100)}


def test_registering_never_changes_the_settings_of_an_existing_namespace(
    bus: hotparams.Bus,
) -> None:
    bus.register("chat", ChatParams)
    for i in range(150):
        bus.set("chat", {"max_tokens": 100 + i})
    before = dump_namespace(bus.client, "chat")
    rules = ParamSchema.of(ChatParams).rules_json
    # the raw call of the issue: it erased the audit down to 9 entries
    with pytest.raises(redis.ResponseError, match="HP_BADARG audit_maxlen must be an integer"):
        fcall(bus.client, "hp_register", "chat", rules, dumps({"retention": 1, "audit_maxlen": 1}))
    with pytest.raises(redis.ResponseError, match="HP_SETTINGS chat: retention is 100, not 1"):
        fcall(bus.client, "hp_register", "chat", rules, dumps({"retention": 1}))
    with pytest.raises(hotparams.ConfigError, match=r"use hp_configure, bus\.configure"):
        bus.register("chat", ChatParams, retention=5)
    # a Bus whose defaults differ registers fine: defaults are for new namespaces
    other = hotparams.Bus(bus.client, settings=hotparams.Settings(retention=7))
    assert other.register("chat", ChatParams).created is False
    assert dump_namespace(bus.client, "chat") == before
    # the same settings are fine, and a new namespace takes them
    assert bus.register("chat", ChatParams, retention=100).version == 151
    bus.register("fresh", ChatParams, retention=5, audit_maxlen=200)
    assert (meta(bus, "fresh")["retention"], meta(bus, "fresh")["audit_maxlen"]) == ("5", "200")
    other.register("fresh2", ChatParams)
    assert meta(bus, "fresh2")["retention"] == "7"


def test_the_lua_caps_are_the_python_caps() -> None:
    source = library_source()
    for name, (low, high) in SETTING_CAPS.items():
        assert f"{name} = {{ {low}, {high} }}" in source
