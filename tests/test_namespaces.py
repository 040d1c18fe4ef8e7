"""Namespace lifecycle: list every namespace, delete one (a lasting
tombstone; workers keep their snapshot and report it), register it again
(a new history that workers follow)."""

from __future__ import annotations

import asyncio

import pytest
import redis

import hotparams
from hotparams import aio
from hotparams.keys import keys_for

from .helpers import dump_namespace, wait_until
from .models import ChatParams, PairParams


def test_namespaces_lists_each_with_version_last_change_and_workers(bus: hotparams.Bus) -> None:
    assert bus.namespaces() == []
    bus.register("chat", ChatParams, author="ana")
    bus.register("pair", PairParams)
    bus.set("pair", {"a": 1}, author="bob")
    with bus.watch("pair", PairParams):
        assert wait_until(lambda: bus.namespaces()[1].workers == 1)
        listed = bus.namespaces()
    assert [n.namespace for n in listed] == ["chat", "pair"]
    chat, pair = listed
    assert (chat.version, chat.last_author, chat.last_op, chat.workers) == (1, "ana", "init", 0)
    assert (pair.version, pair.last_author, pair.last_op) == (2, "bob", "set")
    head = bus.head("pair")
    assert (pair.epoch, pair.committed_ms, pair.schema_rev) == (
        head.epoch,
        head.committed_ms,
        head.schema_rev,
    )
    assert pair.settings == hotparams.NamespaceSettings(100, 10_000, 65_536)


def test_delete_leaves_a_tombstone_and_the_audit_and_nothing_else(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 0.2})
    epoch = bus.head("chat").epoch
    assert bus.delete("chat", author="ana", reason="retired") == 2
    keys = keys_for("chat")
    left = dump_namespace(bus.client, "chat", include_fleet=True)
    assert sorted(left) == [keys.audit, f"{keys.base}:deleted"]
    tomb = left[f"{keys.base}:deleted"]
    assert (tomb["author"], tomb["reason"], tomb["epoch"], tomb["version"]) == (
        "ana",
        "retired",
        epoch,
        "2",
    )
    with pytest.raises(hotparams.NamespaceNotFound) as info:
        bus.get("chat")
    deleted = info.value.deleted
    assert deleted is not None
    assert (deleted.author, deleted.reason, deleted.epoch, deleted.version) == (
        "ana",
        "retired",
        epoch,
        2,
    )
    assert "deleted by ana" in str(info.value) and "retired" in str(info.value)
    assert [c.op for c in bus.history("chat")] == ["delete", "set", "init"]
    assert bus.namespaces() == []


def test_a_refused_delete_changes_nothing(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    before = dump_namespace(bus.client, "chat", include_fleet=True)
    with pytest.raises(hotparams.VersionConflict):
        bus.delete("chat", expect_version=5)
    assert dump_namespace(bus.client, "chat", include_fleet=True) == before
    with pytest.raises(hotparams.NamespaceNotFound):
        bus.delete("nothing")
    assert dump_namespace(bus.client, "nothing", include_fleet=True) == {}


def test_a_worker_keeps_its_snapshot_reports_the_deletion_and_follows_the_next_history(
    bus: hotparams.Bus,
) -> None:
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 0.2})
    old_epoch = bus.head("chat").epoch
    with bus.watch("chat", ChatParams, reconcile_interval=0.2) as live:
        bus.delete("chat", author="ana", reason="retired")
        assert wait_until(lambda: live.status().deleted is not None)
        status = live.status()
        assert status.deleted is not None and status.deleted.author == "ana"
        assert status.stale and status.lost
        assert live.current.params.temperature == 0.2  # the last good snapshot
        reg = bus.register("chat", ChatParams, initial={"temperature": 1.1})
        assert (reg.created, reg.version) == (True, 1)
        new_epoch = bus.head("chat").epoch
        assert new_epoch != old_epoch
        assert wait_until(lambda: live.current.epoch == new_epoch)
        assert (live.current.version, live.current.params.temperature) == (1, 1.1)
        assert live.status().deleted is None and not live.status().lost
        later = bus.set("chat", {"temperature": 0.5})
        assert live.wait_for(later)
        assert live.current.params == bus.get("chat", ChatParams).params


def test_the_asyncio_bus_lists_and_deletes(redis_url: str) -> None:
    async def main() -> None:
        abus = aio.connect(redis_url)
        await abus.register("chat", ChatParams)
        assert [n.namespace for n in await abus.namespaces()] == ["chat"]
        settings = await abus.configure("chat", retention=10, reason="smaller")
        assert settings.retention == 10
        assert await abus.delete("chat", author="ana") == 1
        with pytest.raises(hotparams.NamespaceNotFound) as info:
            await abus.head("chat")
        assert info.value.deleted is not None and info.value.deleted.author == "ana"
        assert await abus.namespaces() == []
        await abus.aclose()

    asyncio.run(main())


def test_a_retried_delete_answers_the_first_attempt(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    bus.load_library()

    def delete(rid: str) -> object:
        return bus.client.execute_command(  # type: ignore[no-untyped-call]
            "FCALL", "hp_delete", "1", "chat", "@rid", rid, "@author", "ana"
        )

    assert delete("r1") == 1
    after = dump_namespace(bus.client, "chat", include_fleet=True)
    assert delete("r1") == 1  # the reply was lost: the retry gets the answer again
    assert dump_namespace(bus.client, "chat", include_fleet=True) == after
    with pytest.raises(redis.ResponseError, match="HP_NONS namespace chat was deleted"):
        delete("r2")
