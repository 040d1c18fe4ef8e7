"""Migrations: dropping, renaming and changing fields is explicit, audited,
atomic and refused when a stored value would not fit."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from pydantic import BaseModel, Field

import hotparams
from hotparams import aio
from hotparams.codec import dumps
from hotparams.schema import ParamSchema

from .helpers import dump_namespace


class V1(BaseModel):
    temperature: float = Field(0.7, ge=0, le=2)
    legacy: str = "x"
    tokens: int = 256


class V2(BaseModel):
    """legacy dropped, tokens renamed to max_tokens, streaming added."""

    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=8192)
    streaming: bool = True


class Narrow(BaseModel):
    temperature: float = Field(0.7, ge=0, le=1)
    legacy: str = "x"
    tokens: int = 256


def plan_of(migration: hotparams.Migration) -> dict[str, tuple[str, str | None]]:
    return {f.field: (f.action, f.to) for f in migration.fields}


def test_a_dry_run_shows_what_happens_to_each_value_and_writes_nothing(
    bus: hotparams.Bus,
) -> None:
    bus.register("chat", V1)
    bus.set("chat", {"tokens": 1024, "temperature": 0.3})
    before = dump_namespace(bus.client, "chat")
    plan = bus.migrate("chat", V2, drop=["legacy"], rename={"tokens": "max_tokens"}, dry_run=True)
    assert (plan.applied, plan.ok, plan.version, plan.schema_rev) == (False, True, 2, 1)
    assert plan_of(plan) == {
        "legacy": ("dropped", None),
        "temperature": ("kept", None),
        "tokens": ("renamed", "max_tokens"),
        "streaming": ("added", None),
    }
    assert dump_namespace(bus.client, "chat") == before


def test_a_migration_drops_renames_adds_and_is_audited(bus: hotparams.Bus) -> None:
    bus.register("chat", V1)
    bus.set("chat", {"tokens": 1024, "temperature": 0.3})
    done = bus.migrate(
        "chat",
        V2,
        drop=["legacy"],
        rename={"tokens": "max_tokens"},
        author="ana",
        reason="v2 names",
    )
    assert (done.applied, done.version, done.schema_rev) == (True, 3, 2)
    snap = bus.get("chat", V2)
    assert snap.values == {"temperature": 0.3, "max_tokens": 1024, "streaming": True}
    assert (snap.version, snap.schema_rev) == (3, 2)
    change = bus.history("chat", limit=1)[0]
    assert (change.op, change.author, change.reason) == ("migrate", "ana", "v2 names")
    assert change.migration == {"drop": ["legacy"], "rename": {"tokens": "max_tokens"}}
    assert dict(change.changes) == {
        "legacy": hotparams.FieldChange("x", None),
        "tokens": hotparams.FieldChange(1024, None),
        "max_tokens": hotparams.FieldChange(None, 1024),
        "streaming": hotparams.FieldChange(None, True),
    }
    # the new rules hold for every writer, the old names are gone
    raw_writer = hotparams.Bus(bus.client)
    with pytest.raises(hotparams.InvalidParams):
        raw_writer.set("chat", {"max_tokens": 9000})
    with pytest.raises(hotparams.InvalidParams):
        raw_writer.set("chat", {"tokens": 5})
    # and an old release registering again cannot bring them back
    assert bus.register("chat", V2).new_revision is False


def test_a_migration_a_stored_value_breaks_is_refused_whole(bus: hotparams.Bus) -> None:
    bus.register("chat", V1)
    bus.set("chat", {"temperature": 1.5})
    before = dump_namespace(bus.client, "chat")
    plan = bus.migrate("chat", Narrow, dry_run=True)
    assert not plan.ok and plan_of(plan)["temperature"] == ("invalid", None)
    assert "must be <= 1" in plan.problems["temperature"]
    with pytest.raises(hotparams.InvalidParams) as info:
        bus.migrate("chat", Narrow)
    assert "must be <= 1" in info.value.errors["temperature"]
    assert dump_namespace(bus.client, "chat") == before
    bus.set("chat", {"temperature": 0.9})
    assert bus.migrate("chat", Narrow).applied


def test_a_variant_override_that_would_not_fit_refuses_the_migration(
    bus: hotparams.Bus,
) -> None:
    bus.register("chat", V1)
    bus.set_variant("chat", "hot", {"temperature": 1.8}, percent=10)
    before = dump_namespace(bus.client, "chat")
    with pytest.raises(hotparams.InvalidParams) as info:
        bus.migrate("chat", Narrow)
    assert "variant hot temperature" in info.value.errors
    assert dump_namespace(bus.client, "chat") == before
    bus.set_variant("chat", "hot", {"tokens": 5})
    before = dump_namespace(bus.client, "chat")
    with pytest.raises(hotparams.InvalidParams) as renamed:
        bus.migrate("chat", V2, drop=["legacy"], rename={"tokens": "max_tokens"})
    assert "change or remove the variant first" in renamed.value.errors["variant hot tokens"]
    assert dump_namespace(bus.client, "chat") == before


def test_a_rule_only_migration_is_a_new_revision_and_an_audit_entry(bus: hotparams.Bus) -> None:
    class Wider(BaseModel):
        temperature: float = Field(0.7, ge=0, le=3)
        legacy: str = "x"
        tokens: int = 256

    bus.register("chat", V1)
    reg = bus.register("chat", Wider)  # registering never changes a rule
    assert reg.kept_rules == ("temperature",)
    done = bus.migrate("chat", Wider)
    assert (done.applied, done.version, done.schema_rev) == (True, 2, 2)
    assert bus.history("chat", limit=1)[0].op == "migrate"
    assert bus.set("chat", {"temperature": 2.5}) == 3
    # nothing left to migrate: nothing written
    before = dump_namespace(bus.client, "chat")
    assert bus.migrate("chat", Wider).applied is False
    assert dump_namespace(bus.client, "chat") == before


def test_stored_fields_the_model_lacks_are_kept_unless_dropped(bus: hotparams.Bus) -> None:
    class Only(BaseModel):
        temperature: float = Field(0.7, ge=0, le=1)

    bus.register("chat", V1)
    bus.set("chat", {"legacy": "keep me"})
    done = bus.migrate("chat", Only)
    assert plan_of(done)["legacy"] == ("kept", None)
    assert bus.get("chat").values["legacy"] == "keep me"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, "legacy: stored but not in the new schema: drop or rename it"),
        ({"drop": ["nope"]}, "nope: cannot be dropped: not a stored field"),
        ({"drop": ["temperature"]}, "temperature: cannot be dropped: it is in the new schema"),
        ({"rename": {"tokens": "nope"}}, "the new schema has no field nope"),
        ({"drop": ["legacy", "tokens"], "base_rev": 7}, "HP_STALE"),
    ],
)
def test_a_raw_migration_must_say_what_happens_to_every_stored_field(
    bus: hotparams.Bus, options: dict[str, object], error: str
) -> None:
    bus.register("chat", V1)
    before = dump_namespace(bus.client, "chat")
    rules = dumps({"fields": {"temperature": ParamSchema.of(V1).rules["fields"]["temperature"]}})
    with pytest.raises(redis.ResponseError, match=error):
        bus.client.execute_command(  # type: ignore[no-untyped-call]
            "FCALL", "hp_migrate", "1", "chat", rules, dumps(options)
        )
    assert dump_namespace(bus.client, "chat") == before


def test_the_asyncio_bus_migrates(redis_url: str) -> None:
    async def main() -> None:
        abus = aio.connect(redis_url)
        await abus.register("chat", V1)
        done = await abus.migrate("chat", V2, drop=["legacy"], rename={"tokens": "max_tokens"})
        assert done.applied and (await abus.get("chat", V2)).params == V2(max_tokens=256)
        await abus.aclose()

    asyncio.run(main())


def test_a_rename_onto_a_field_the_new_release_registered_keeps_the_stored_value(
    bus: hotparams.Bus,
) -> None:
    bus.register("chat", V1)
    bus.set("chat", {"tokens": 1024})
    bus.register("chat", V2)  # the rolling deploy: max_tokens stored with its default
    assert bus.get("chat").values["max_tokens"] == 512
    done = bus.migrate("chat", V2, drop=["legacy"], rename={"tokens": "max_tokens"})
    assert plan_of(done)["max_tokens"] == ("replaced", None)
    assert bus.get("chat", V2).values == {"temperature": 0.7, "max_tokens": 1024, "streaming": True}
    with pytest.raises(hotparams.InvalidParams, match="is renamed to it too"):
        bus.migrate("chat", V1, rename={"max_tokens": "tokens", "streaming": "tokens"})


def test_a_migration_keeps_the_namespaces_raw_writer_opt_in(bus: hotparams.Bus) -> None:
    bus.register("chat", V1, allow_raw_writes=True)
    assert bus.rules("chat").get("allow_raw_writes") is True
    bus.migrate("chat", V2, drop=["legacy"], rename={"tokens": "max_tokens"})
    assert bus.rules("chat").get("allow_raw_writes") is True


def test_a_retried_migration_answers_the_first_attempt(bus: hotparams.Bus) -> None:
    bus.register("chat", V1)
    rules = dumps({"fields": ParamSchema.of(Narrow).rules["fields"]})
    options = dumps({"rid": "m1", "author": "ana"})

    def migrate() -> dict[str, object]:
        reply = bus.client.execute_command(  # type: ignore[no-untyped-call]
            "FCALL", "hp_migrate", "1", "chat", rules, options
        )
        return json.loads(reply)  # type: ignore[no-any-return]

    first = migrate()
    assert (first["applied"], first["version"], first["schema_rev"]) == (True, 2, 2)
    after = dump_namespace(bus.client, "chat")
    again = migrate()  # the reply was lost: the retry gets the answer again
    assert (again["applied"], again["version"]) == (True, 2)
    assert dump_namespace(bus.client, "chat") == after
