"""The parameter store: registration, versions, history, rollback, retention."""

from __future__ import annotations

import orjson
import pytest
from pydantic import BaseModel, Field, model_validator

import hotparams
from hotparams.keys import keys_for

from .helpers import dump_namespace
from .models import ChatParams


def test_register_seeds_the_defaults_as_version_1(bus: hotparams.Bus) -> None:
    result = bus.register("chat", ChatParams)
    assert (result.version, result.schema_rev, result.created) == (1, 1, True)
    snap = bus.get("chat")
    assert snap.version == 1
    assert snap.params == ChatParams()
    assert isinstance(snap.params, ChatParams)
    assert len(bus.history("chat")) == 1


def test_register_is_idempotent(bus: hotparams.Bus, raw: object) -> None:
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 1.1})
    before = dump_namespace(bus.client, "chat")
    again = bus.register("chat", ChatParams)
    assert (again.version, again.schema_rev, again.created, again.new_revision) == (
        2,
        1,
        False,
        False,
    )
    assert dump_namespace(bus.client, "chat") == before


def test_register_with_initial_values(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams, initial={"model": "gpt-4o", "temperature": 0.2})
    params = bus.get("chat").params
    assert (params.model, params.temperature) == ("gpt-4o", 0.2)


def test_a_changed_model_is_a_new_schema_revision_and_version(bus: hotparams.Bus) -> None:
    class V1(BaseModel):
        a: int = 1
        b: str = "x"

    class V2(BaseModel):  # lacks b, adds c, narrows a
        a: int = Field(1, le=100)
        c: bool = True

    bus.register("ns", V1)
    bus.set("ns", {"a": 7})
    result = bus.register("ns", V2)
    assert (result.version, result.schema_rev, result.new_revision) == (3, 2, True)
    assert result.kept_rules == ("a",)  # a rule changes only by a migration
    snap = bus.get("ns", V2)
    assert snap.values == {"a": 7, "b": "x", "c": True}  # a and b kept, c defaulted
    assert snap.params == V2(a=7, c=True)
    assert bus.history("ns", limit=1)[0].op == "schema"
    # the new field's rule is enforced by Redis for any writer
    with pytest.raises(hotparams.InvalidParams):
        hotparams.Bus(bus.client).set("ns", {"c": "yes"})


def test_a_model_whose_bounds_the_current_values_break_is_refused(bus: hotparams.Bus) -> None:
    class Loose(BaseModel):
        a: int = 1

    class Strict(BaseModel):
        a: int = Field(1, le=5)

    bus.register("ns", Loose)
    bus.set("ns", {"a": 50})
    before = dump_namespace(bus.client, "ns")
    with pytest.raises(hotparams.InvalidParams) as info:
        bus.migrate("ns", Strict)
    assert "a" in info.value.errors
    assert dump_namespace(bus.client, "ns") == before


def test_versions_are_gapless_and_each_has_one_audit_entry(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    versions = [bus.set("chat", {"max_tokens": 100 + i}) for i in range(20)]
    assert versions == list(range(2, 22))
    history = bus.history("chat", limit=100)
    assert [c.version for c in history] == list(range(21, 0, -1))
    assert all(c.previous == c.version - 1 for c in history)


def test_a_change_that_changes_nothing_writes_nothing(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    v = bus.set("chat", {"temperature": 0.3})
    before = dump_namespace(bus.client, "chat")
    assert bus.set("chat", {"temperature": 0.3}) == v
    assert hotparams.Bus(bus.client).set("chat", {"temperature": 0.3}) == v
    assert dump_namespace(bus.client, "chat") == before


def test_set_records_author_reason_and_source(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 0.9}, author="ana", reason="warmer replies", source="t")
    change = bus.history("chat", limit=1)[0]
    assert (change.author, change.reason, change.source, change.op) == (
        "ana",
        "warmer replies",
        "t",
        "set",
    )
    assert change.changes["temperature"] == hotparams.FieldChange(0.7, 0.9)
    assert change.at.year >= 2024


def test_expect_version_is_compare_and_set(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    assert bus.set("chat", {"temperature": 0.1}, expect_version=1) == 2
    before = dump_namespace(bus.client, "chat")
    with pytest.raises(hotparams.VersionConflict) as info:
        bus.set("chat", {"temperature": 0.2}, expect_version=1)
    assert (info.value.namespace, info.value.expected, info.value.actual) == ("chat", 1, 2)
    # the Lua check alone (a writer without the model) gives the same error
    with pytest.raises(hotparams.VersionConflict):
        hotparams.Bus(bus.client).set("chat", {"temperature": 0.2}, expect_version=1)
    assert dump_namespace(bus.client, "chat") == before


def test_unset_returns_a_field_to_its_default(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 1.5, "max_tokens": 99})
    v = bus.unset("chat", ["temperature"])
    snap = bus.get("chat")
    assert (snap.version, snap.params.temperature, snap.params.max_tokens) == (v, 0.7, 99)
    assert bus.history("chat", limit=1)[0].op == "unset"
    # without the model, Redis uses the stored default
    hotparams.Bus(bus.client).unset("chat", "max_tokens")
    assert bus.get("chat").params.max_tokens == 512


def test_get_a_retained_version(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 0.1})
    bus.set("chat", {"temperature": 0.2})
    assert bus.get("chat", version=2).params.temperature == 0.1
    assert bus.get("chat", version=1).params.temperature == 0.7


def test_rollback_to_every_retained_version(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    for t in (0.1, 0.2, 0.3, 0.4):
        bus.set("chat", {"temperature": t, "max_tokens": int(t * 1000)})
    originals = {v: bus.get("chat", version=v).values for v in range(1, 6)}
    old_hashes = {v: bus.client.hgetall(keys_for("chat").version(v)) for v in range(1, 6)}
    for target in range(1, 6):
        new = bus.rollback("chat", target, author="ops", reason=f"back to {target}")
        snap = bus.get("chat")
        assert snap.version == new
        assert snap.values == originals[target]
        entry = bus.history("chat", limit=1)[0]
        assert (entry.op, entry.target, entry.reason) == ("rollback", target, f"back to {target}")
    # history is never rewritten: the old versions are untouched
    assert {v: bus.client.hgetall(keys_for("chat").version(v)) for v in range(1, 6)} == old_hashes


class OrderedByValidator(BaseModel):
    """Ordered by a model validator (Python-only), not a declared Check."""

    low: int = 0
    high: int = 0

    @model_validator(mode="after")
    def in_order(self) -> OrderedByValidator:
        if self.low > self.high:
            raise ValueError("low must be <= high")
        return self


def test_rollback_is_checked_by_the_full_model(bus: hotparams.Bus) -> None:
    plain = hotparams.Bus(bus.client)  # no model: only the Lua rules
    # the opt-in lets raw writers past the model validator Lua cannot run
    bus.register("ord", OrderedByValidator, allow_raw_writes=True)
    plain.set("ord", {"low": 5, "high": 10})
    plain.set("ord", {"low": 20, "high": 22})
    plain.set("ord", {"low": 23, "high": 1})  # v4: breaks the model validator
    before = dump_namespace(bus.client, "ord")
    with pytest.raises(hotparams.InvalidParams) as info:
        bus.rollback("ord", 4)
    assert "low must be <= high" in info.value.errors["*"]
    assert dump_namespace(bus.client, "ord") == before


def test_retention_trims_old_versions(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams, retention=3)
    for i in range(10):
        bus.set("chat", {"max_tokens": 10 + i})
    keys = keys_for("chat")
    kept = sorted(
        int(k.decode().rsplit(":", 1)[1]) for k in bus.client.scan_iter(match=keys.version("*"))
    )
    assert kept == [9, 10, 11]
    assert int(bus.client.hget(keys.meta, "oldest")) == 9
    with pytest.raises(hotparams.VersionNotFound) as info:
        bus.rollback("chat", 8)
    assert info.value.version == 8
    with pytest.raises(hotparams.VersionNotFound):
        bus.get("chat", version=2)
    assert bus.rollback("chat", 9) == 12
    # the audit keeps every change even when versions are trimmed
    assert len(bus.history("chat", limit=100)) == 12


def test_unknown_namespace_is_a_clear_error(bus: hotparams.Bus) -> None:
    with pytest.raises(hotparams.NamespaceNotFound):
        bus.get("nope")
    with pytest.raises(hotparams.NamespaceNotFound):
        hotparams.Bus(bus.client).set("nope", {"a": 1})
    assert list(bus.client.scan_iter(match="hp:{nope}:*")) == []


def test_every_change_is_published_with_its_values(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    pubsub = bus.client.pubsub()
    pubsub.ssubscribe(keys_for("chat").channel)
    assert pubsub.get_message(timeout=2)["type"] == "ssubscribe"
    bus.set("chat", {"temperature": 0.5, "api_key": "sk-secret-1"})
    message = pubsub.get_message(timeout=2)
    pubsub.close()
    event = orjson.loads(message["data"])
    assert (event["ns"], event["v"], event["prev"], event["op"]) == ("chat", 2, 1, "set")
    assert event["changed"] == {"temperature": 0.5}
    assert event["redacted"] == ["api_key"]
    assert event["epoch"] == bus.head("chat").epoch
    assert b"sk-secret-1" not in message["data"]


def test_set_many_pipelines_changes_in_order(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    bus.register("rag", ChatParams)
    versions = bus.set_many(
        [("chat", {"temperature": 0.1}), ("rag", {"max_tokens": 64}), ("chat", {"top_p": 0.5})]
    )
    assert versions == [2, 2, 3]
    assert bus.get("chat").values["temperature"] == 0.1
    assert bus.get("chat").values["top_p"] == 0.5
    # a locally invalid item: nothing at all is sent
    before = dump_namespace(bus.client, "chat")
    with pytest.raises(hotparams.InvalidParams):
        bus.set_many([("chat", {"temperature": 0.2}), ("chat", {"temperature": 9})])
    assert dump_namespace(bus.client, "chat") == before


def test_set_many_reports_which_items_redis_rejected(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    plain = hotparams.Bus(bus.client)
    with pytest.raises(hotparams.BatchError) as info:
        plain.set_many([("chat", {"temperature": 0.2}), ("chat", {"temperature": 9})])
    first, second = info.value.results
    assert isinstance(first, hotparams.writes.Committed) and first.version == 2
    assert isinstance(second, hotparams.InvalidParams)
    assert bus.get("chat").version == 2


def test_a_writer_with_a_stale_cache_revalidates(bus: hotparams.Bus) -> None:
    other = hotparams.Bus(bus.client)
    bus.register("chat", ChatParams)
    other.bind("chat", ChatParams)
    bus.set("chat", {"quiet_to": 10})  # bus caches version 2
    other.set("chat", {"quiet_from": 8})  # version 3 behind bus's back
    # against its cache bus would accept quiet_to=5; against version 3 it must not
    with pytest.raises(hotparams.InvalidParams):
        bus.set("chat", {"quiet_to": 5})
    assert bus.set("chat", {"quiet_to": 12}) == 4
    assert bus.get("chat").values["quiet_from"] == 8
