"""Partial loss is detected, not papered over: a write on a namespace whose
current version hash is missing or incomplete, or whose meta is gone while
the rest remains, is refused (HP_DAMAGED, ``NamespaceDamaged``) with
nothing written and a message that says how to restore; a restore after
any loss writes whole, fresh version hashes, so nothing of the old history
(a variant) comes back; running and new workers then agree field by field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import hotparams
from hotparams.keys import keys_for

from .helpers import dump_namespace, wait_until
from .models import PairParams

NS = "pair"
KEYS = keys_for(NS)


@pytest.fixture
def writer(bus: hotparams.Bus) -> hotparams.Bus:
    bus.register(NS, PairParams)
    bus.set(NS, {"a": 1, "b": 1, "note": "kept"})  # version 2
    bus.set(NS, {"a": 2, "b": 2})  # version 3
    return bus


def fcall(bus: hotparams.Bus, *args: str) -> Any:
    return bus.client.execute_command("FCALL", args[0], 1, NS, *args[1:])  # type: ignore[no-untyped-call]


LOSSES: dict[str, Callable[[redis.Redis], None]] = {
    "hash gone": lambda c: c.delete(KEYS.version(3)),
    "a field gone": lambda c: c.hdel(KEYS.version(3), "note"),
    "a value changed": lambda c: c.hset(KEYS.version(3), "a", "99"),
}


@pytest.mark.parametrize("loss", list(LOSSES))
def test_a_write_on_a_damaged_current_version_is_refused_and_says_how_to_restore(
    writer: hotparams.Bus, loss: str
) -> None:
    LOSSES[loss](writer.client)
    dump = dump_namespace(writer.client, NS)
    other = hotparams.Bus(writer.client, url=writer.url)  # no model: the Lua rules alone
    for bus in (writer, other):
        with pytest.raises(hotparams.NamespaceDamaged) as caught:
            bus.set(NS, {"a": 5, "b": 5})
        assert f"hotparams restore {NS} --from-cache FILE" in str(caught.value)
        assert caught.value.detail and caught.value.namespace == NS
    with pytest.raises(redis.ResponseError, match=r"^HP_DAMAGED"):
        fcall(writer, "hp_set", "a", "5")
    with pytest.raises(hotparams.NamespaceDamaged):
        writer.set_variant(NS, "t", {"b": 1}, percent=10)
    if loss != "a value changed":
        with pytest.raises(hotparams.NamespaceDamaged):
            writer.get(NS)  # readers are told too, never served a partial version
    else:  # complete: readers validate what is stored; writers refuse to build on it
        assert writer.get(NS).values["a"] == 99
    assert dump_namespace(writer.client, NS) == dump  # nothing written


def test_a_write_on_a_namespace_whose_meta_is_lost_is_refused(writer: hotparams.Bus) -> None:
    writer.client.delete(KEYS.meta)
    dump = dump_namespace(writer.client, NS)
    with pytest.raises(hotparams.NamespaceDamaged, match="meta"):
        hotparams.Bus(writer.client, url=writer.url).set(NS, {"a": 5})
    with pytest.raises(redis.ResponseError, match=r"^HP_DAMAGED"):
        fcall(writer, "hp_commit", "a", "5")
    assert dump_namespace(writer.client, NS) == dump


def test_rollback_to_a_damaged_version_is_refused(writer: hotparams.Bus) -> None:
    writer.client.hdel(KEYS.version(2), "note")
    dump = dump_namespace(writer.client, NS)
    with pytest.raises(hotparams.NamespaceDamaged, match="version 2 lacks the field"):
        writer.rollback(NS, 2)
    assert dump_namespace(writer.client, NS) == dump


@pytest.mark.parametrize("loss", list(LOSSES))
def test_a_rollback_to_an_intact_version_repairs_a_damaged_current_one(
    writer: hotparams.Bus, loss: str
) -> None:
    LOSSES[loss](writer.client)
    version = writer.rollback(NS, 2)  # the whole state from version 2
    assert version == 4
    assert dict(writer.get(NS).values) == {"a": 1, "b": 1, "note": "kept"}
    assert writer.set(NS, {"a": 5, "b": 5}) == 5  # and writes go on


def served(live: hotparams.Live[PairParams]) -> tuple[int, str, dict[str, Any], str]:
    snap = live.current
    return (snap.version, snap.epoch, dict(snap.values), snap.variants.to_json() or "")


@pytest.fixture
def real(redis_url: str) -> Iterator[hotparams.Bus]:
    bus = hotparams.connect(redis_url)
    bus.register(NS, PairParams)
    yield bus
    bus.close()


def test_after_a_lost_version_hash_the_fleet_keeps_its_values_and_agrees_after_restore(
    real: hotparams.Bus, tmp_path: Path
) -> None:
    real.set(NS, {"a": 4, "b": 4, "note": "operator's"})
    running = real.watch(NS, PairParams, cache=tmp_path / "pair.json", reconcile_interval=0.2)
    try:
        real.client.delete(KEYS.version(real.head(NS).version))  # evicted
        with pytest.raises(hotparams.NamespaceDamaged):
            real.set(NS, {"a": 5, "b": 5})  # before: stored only a and b
        # the running worker keeps its values and says why it is stale
        assert wait_until(lambda: running.status().stale, 5)
        assert running.current.values["note"] == "operator's"
        # a new worker starts from its cache file rather than from defaults
        newcomer = real.watch(NS, PairParams, cache=tmp_path / "pair.json")
        assert newcomer.current.values["note"] == "operator's"
        newcomer.close()
        version = real.restore(NS, running.current)
        assert real.get(NS).values["note"] == "operator's"
        assert running.wait_for(version, 5)
        fresh = real.watch(NS, PairParams)
        try:
            assert served(fresh) == served(running)
            assert served(fresh)[2] == {"a": 4, "b": 4, "note": "operator's"}
            assert wait_until(lambda: not running.status().stale, 5)
        finally:
            fresh.close()
    finally:
        running.close()


def test_after_a_lost_meta_restore_starts_a_new_history_without_ghosts(
    real: hotparams.Bus,
) -> None:
    real.set(NS, {"a": 1, "b": 1})  # version 2
    real.set_variant(NS, "ghost", {"b": 9}, percent=50)  # version 3
    real.remove_variant(NS, "ghost")  # version 4
    real.set(NS, {"a": 4, "b": 4})  # version 5
    running = real.watch(NS, PairParams, reconcile_interval=0.2)
    try:
        old_epoch = running.current.epoch
        real.client.delete(KEYS.meta)
        version = real.restore(NS, running.current)
        assert version == 1 and real.head(NS).epoch != old_epoch  # a new history
        real.set(NS, {"a": 6, "b": 6})  # version 2 of it: where the old version 2 was
        real.set(NS, {"a": 7, "b": 7})  # version 3: where the ghost variant was
        assert not real.variants(NS).variants
        for n in (1, 2, 3):
            assert b"@variants" not in real.client.hgetall(KEYS.version(n))
        assert running.wait_for(3, 5)
        assert wait_until(lambda: running.current.epoch == real.head(NS).epoch, 5)
        fresh = real.watch(NS, PairParams)
        try:
            assert wait_until(lambda: served(fresh) == served(running), 5)
            assert served(fresh)[2] == {"a": 7, "b": 7, "note": ""}
            assert served(fresh)[3] == ""  # no variant from the old history
        finally:
            fresh.close()
        # every change of the new history is in the audit
        entries = real.history(NS, limit=3)
        assert [(c.version, c.op) for c in entries] == [(3, "set"), (2, "set"), (1, "init")]
    finally:
        running.close()
