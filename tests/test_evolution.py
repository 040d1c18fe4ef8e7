"""Schema evolution for rolling deploys: registering is monotone, a schema
is its rules (not its class name), registering checks before it writes."""

from __future__ import annotations

import pytest
import redis
from pydantic import BaseModel, ConfigDict, Field, create_model

import hotparams
from hotparams.codec import dumps
from hotparams.keys import keys_for
from hotparams.schema import ParamSchema

from .helpers import dump_namespace, wait_until


class OldParams(BaseModel):
    """The release before max_tokens existed."""

    model: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)


class NewParams(BaseModel):
    """The next release: max_tokens added."""

    model: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=32_000)


def fcall(client: redis.Redis, function: str, ns: str, *args: str) -> object:
    return client.execute_command("FCALL", function, "1", ns, *args)  # type: ignore[no-untyped-call]


def test_an_old_release_registering_keeps_the_fields_it_does_not_know(
    bus: hotparams.Bus,
) -> None:
    bus.register("chat", NewParams)
    bus.set("chat", {"max_tokens": 4096}, author="ops", reason="longer answers")
    before = dump_namespace(bus.client, "chat")
    old = hotparams.Bus(bus.client)  # a process still on the old model
    reg = old.register("chat", OldParams)
    assert (reg.version, reg.new_revision, reg.kept_rules) == (2, False, ())
    assert dump_namespace(bus.client, "chat") == before
    again = bus.register("chat", NewParams)  # the new release restarts
    assert (again.version, again.new_revision) == (2, False)
    assert dump_namespace(bus.client, "chat") == before
    assert bus.get("chat", NewParams).params.max_tokens == 4096
    # the old release writes the fields it knows; max_tokens stays
    old.set("chat", {"temperature": 0.2})
    assert bus.get("chat", NewParams).values["max_tokens"] == 4096
    assert old.get("chat", OldParams).params == OldParams(temperature=0.2)


def test_a_raw_hp_register_with_fewer_fields_is_refused_and_changes_nothing(
    bus: hotparams.Bus,
) -> None:
    bus.register("chat", NewParams)
    bus.set("chat", {"max_tokens": 4096})
    before = dump_namespace(bus.client, "chat")
    smaller = ParamSchema.of(OldParams).rules_json
    with pytest.raises(redis.ResponseError, match="HP_SCHEMA chat: the schema lacks max_tokens"):
        fcall(bus.client, "hp_register", "chat", smaller, dumps({"epoch": "x"}))
    changed = dumps(
        {"fields": {**ParamSchema.of(NewParams).rules["fields"], "max_tokens": {"types": ["any"]}}}
    )
    with pytest.raises(redis.ResponseError, match="changes the rule of max_tokens"):
        fcall(bus.client, "hp_register", "chat", changed, "{}")
    assert dump_namespace(bus.client, "chat") == before


def test_a_new_field_gets_its_default_and_stored_values_stay(bus: hotparams.Bus) -> None:
    bus.register("chat", OldParams)
    bus.set("chat", {"temperature": 1.5})
    reg = bus.register("chat", NewParams)
    assert (reg.version, reg.schema_rev, reg.new_revision) == (3, 2, True)
    assert bus.get("chat", NewParams).values == {
        "model": "gpt-4o-mini",
        "temperature": 1.5,
        "max_tokens": 512,
    }
    change = bus.history("chat", limit=1)[0]
    assert (change.op, dict(change.changes)) == (
        "schema",
        {"max_tokens": hotparams.FieldChange(None, 512)},
    )


def test_a_changed_rule_is_kept_as_stored_and_named(bus: hotparams.Bus) -> None:
    class Narrow(BaseModel):
        model: str = "gpt-4o-mini"
        temperature: float = Field(0.7, ge=0, le=1)  # narrower: a migration

    bus.register("chat", OldParams)
    bus.set("chat", {"temperature": 1.5})
    before = dump_namespace(bus.client, "chat")
    reg = hotparams.Bus(bus.client).register("chat", Narrow)
    assert (reg.new_revision, reg.kept_rules) == (False, ("temperature",))
    assert dump_namespace(bus.client, "chat") == before


def test_a_worker_on_a_newer_model_uses_defaults_without_writing(
    bus: hotparams.Bus,
) -> None:
    bus.register("chat", OldParams)
    bus.set("chat", {"temperature": 0.1})
    before = dump_namespace(bus.client, "chat")
    with bus.watch("chat", NewParams) as live:
        assert live.current.params == NewParams(temperature=0.1)
        assert live.current.params.max_tokens == 512
    assert bus.get("chat", NewParams).params.max_tokens == 512
    assert dump_namespace(bus.client, "chat") == before


class StrictOldParams(OldParams):
    """An older model that forbids extra fields: stored fields it lacks are
    still no error for it."""

    model_config = ConfigDict(extra="forbid")


@pytest.mark.parametrize("model", [OldParams, StrictOldParams])
def test_a_worker_on_an_older_model_ignores_fields_it_does_not_know(
    bus: hotparams.Bus, model: type[OldParams]
) -> None:
    bus.register("chat", NewParams)
    with bus.watch("chat", model) as live:
        version = bus.set("chat", {"max_tokens": 2048, "temperature": 0.3})
        assert wait_until(lambda: live.current.version == version)
        assert live.current.params == model(temperature=0.3)
        assert live.status().rejected is None
    assert bus.get("chat", model).params == model(temperature=0.3)


def test_the_same_model_under_another_module_name_is_the_same_revision(
    bus: hotparams.Bus,
) -> None:
    fields = {name: (info.annotation, info) for name, info in NewParams.model_fields.items()}
    as_main = create_model("NewParams", __module__="__main__", **fields)  # type: ignore[call-overload]
    assert ParamSchema.of(as_main).rules["model"] == "__main__:NewParams"
    bus.register("chat", NewParams)
    before = dump_namespace(bus.client, "chat")
    reg = hotparams.Bus(bus.client).register("chat", as_main)
    assert (reg.schema_rev, reg.new_revision, reg.kept_rules) == (1, False, ())
    assert dump_namespace(bus.client, "chat") == before


def wide_model(count: int) -> type[BaseModel]:
    fields = {f"f{i}": (int, 0) for i in range(count)}
    return create_model("Wide", **fields)  # type: ignore[call-overload,no-any-return]


def test_registering_too_many_fields_is_refused_before_any_write(bus: hotparams.Bus) -> None:
    bus.load_library()
    rule = {"types": ["integer"], "default": "0"}
    too_wide = dumps({"fields": {f"f{i}": rule for i in range(4000)}})
    with pytest.raises(redis.ResponseError, match="at most 1000 fields"):
        fcall(bus.client, "hp_register", "wide", too_wide, dumps({"epoch": "e1"}))
    assert dump_namespace(bus.client, "wide") == {}
    with pytest.raises(hotparams.SchemaError, match="at most 1000 fields"):
        bus.register("wide", wide_model(4000))
    assert dump_namespace(bus.client, "wide") == {}
    # the namespace is not stuck: the largest schema allowed registers
    reg = bus.register("wide", wide_model(1000))
    assert (reg.version, reg.created) == (1, True)
    assert len(bus.get("wide").values) == 1000
    assert bus.set("wide", {"f999": 5}) == 2


def test_a_growing_schema_is_refused_past_the_field_limit(bus: hotparams.Bus) -> None:
    bus.register("wide", wide_model(999))
    before = dump_namespace(bus.client, "wide")
    with pytest.raises(hotparams.SchemaError, match="at most 1000 fields"):
        bus.register("wide", wide_model(1001))
    assert dump_namespace(bus.client, "wide") == before
    assert keys_for("wide").meta in before
