"""Writes acknowledged by replicas (``min_replica_acks``): each write and
its ``WAIT`` travel in one pipeline (one connection, so WAIT counts that
write), reads and fleet reports are never waited for, too few
acknowledgements raise ReplicationLagging naming the committed version,
on a real master and replica as well as through a scripted driver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import hotparams
from hotparams import aio
from hotparams.config import ConfigError, Settings, settings_from
from hotparams.protocol import Batch, Command, FCall, LibraryMissing, Op
from hotparams.replication import acknowledged
from hotparams.server import LocalRedis

from .models import PairParams

WAITING = Settings(min_replica_acks=1, replica_ack_timeout=0.25)
WAIT = Command("ns", ("WAIT", "1", "250"))


def drive(op: Op[Any], replies: list[Any]) -> tuple[list[Any], Any]:
    """Run ``op`` against scripted replies: (the calls it made, its result)."""
    calls: list[Any] = []
    try:
        call = next(op)
        while True:
            calls.append(call)
            reply = replies.pop(0)
            call = op.throw(reply) if isinstance(reply, Exception) else op.send(reply)
    except StopIteration as stop:
        return calls, stop.value


def one_write() -> Op[int]:
    head = yield FCall("hp_head", "ns", (), readonly=True)
    version = yield FCall("hp_commit", "ns", ("a", "1"))
    return int(version) + 0 * len(head)


def test_a_write_and_its_wait_travel_in_one_pipeline_and_reads_alone() -> None:
    calls, result = drive(acknowledged(one_write(), WAITING), [[1, "e", 0, 1], [2, 1]])
    assert calls == [
        FCall("hp_head", "ns", (), readonly=True),
        Batch((FCall("hp_commit", "ns", ("a", "1")), WAIT)),
    ]
    assert result == 2


def test_without_the_setting_the_op_is_left_as_it_is() -> None:
    op = one_write()
    assert acknowledged(op, Settings()) is op


def test_too_few_acknowledgements_raise_replication_lagging_with_the_version() -> None:
    with pytest.raises(hotparams.ReplicationLagging) as caught:
        drive(acknowledged(one_write(), WAITING), [[1, "e", 0, 1], [7, 0]])
    exc = caught.value
    assert (exc.namespace, exc.version, exc.acks, exc.wanted, exc.timeout) == ("ns", 7, 0, 1, 0.25)
    assert "version 7 of 'ns' is committed on the master, but 0 of the 1 replicas" in str(exc)
    assert isinstance(exc, hotparams.HotParamsError)


def test_a_failed_write_raises_its_own_error_into_the_op() -> None:
    def handles() -> Op[str]:
        try:
            yield FCall("hp_commit", "ns", ("a", "1"))
        except hotparams.VersionConflict:
            return "handled"
        return "not raised"

    conflict = hotparams.VersionConflict("ns", 1, 2)
    calls, result = drive(acknowledged(handles(), WAITING), [[conflict, 1]])
    assert result == "handled"
    assert len(calls) == 1


def test_a_write_that_met_lost_functions_lets_the_driver_reload_then_is_sent_again() -> None:
    def write() -> Op[int]:
        return int((yield FCall("hp_commit", "ns", ("a", "1", "@rid", "r1"))))

    batch = Batch((FCall("hp_commit", "ns", ("a", "1", "@rid", "r1")), WAIT))
    calls, result = drive(
        acknowledged(write(), WAITING), [[LibraryMissing("gone"), 1], [3, 1, 0, 1, "d"], [4, 1]]
    )
    assert calls == [batch, FCall("hp_head", "ns", (), readonly=True), batch]
    assert result == 4


def test_a_batch_of_writes_gets_one_wait_at_its_end_and_fleet_reports_none() -> None:
    def batch() -> Op[list[Any]]:
        replies = yield Batch((FCall("hp_commit", "a", ()), FCall("hp_commit", "b", ())))
        yield FCall("hp_report", "a", ("w1",))
        return list(replies)

    calls, result = drive(acknowledged(batch(), WAITING), [[5, 9, 1], "OK"])
    assert calls[0] == Batch(
        (FCall("hp_commit", "a", ()), FCall("hp_commit", "b", ()), Command("a", WAIT.args))
    )
    assert calls[1] == FCall("hp_report", "a", ("w1",))
    assert result == [5, 9]


def test_the_wait_must_end_before_the_reply_timeout() -> None:
    with pytest.raises(
        ConfigError, match="replica_ack_timeout must be shorter than socket_timeout"
    ):
        settings_from({"min_replica_acks": 1, "replica_ack_timeout": 5, "socket_timeout": 5})
    assert settings_from({"replica_ack_timeout": 9}).min_replica_acks == 0


# ---------------------------------------------------------------- real servers


@pytest.fixture
def pair() -> Iterator[tuple[LocalRedis, LocalRedis]]:
    from .sentinel import NODE_ARGS, wait_replicated

    with LocalRedis(extra=list(NODE_ARGS)) as master:
        follow = ["--replicaof", "127.0.0.1", str(master.port)]
        with LocalRedis(extra=[*NODE_ARGS, *follow]) as replica:
            wait_replicated(master, 1)
            yield master, replica


def test_writes_a_replica_acknowledges_return_and_an_unreachable_replica_lags(
    pair: tuple[LocalRedis, LocalRedis],
) -> None:
    master, replica = pair
    with hotparams.connect(master.url, min_replica_acks=1, replica_ack_timeout=0.2) as bus:
        bus.register("pair", PairParams)
        version = bus.set("pair", {"a": 1, "b": 1})
        assert bus.set_many([("pair", {"a": 2, "b": 2})]) == [version + 1]
        with replica.client() as client:
            assert client.hget("hp:{pair}:meta", "version") == str(version + 1).encode()
        replica.freeze()
        try:
            with pytest.raises(hotparams.ReplicationLagging) as caught:
                bus.set("pair", {"a": 3, "b": 3})
        finally:
            replica.thaw()
        assert (caught.value.version, caught.value.acks) == (version + 2, 0)
        assert bus.get("pair").params.a == 3  # committed all the same


def test_the_asyncio_bus_waits_for_replicas_too(pair: tuple[LocalRedis, LocalRedis]) -> None:
    import asyncio

    master, _ = pair

    async def scenario() -> None:
        async with aio.connect(master.url, min_replica_acks=2, replica_ack_timeout=0.1) as bus:
            with pytest.raises(hotparams.ReplicationLagging) as caught:
                await bus.register("pair", PairParams)  # a write like the others
            assert (caught.value.version, caught.value.acks, caught.value.wanted) == (1, 1, 2)
            assert (await bus.head("pair")).version == 1

    asyncio.run(scenario())


def test_a_waited_write_reloads_the_functions_redis_lost_and_is_applied_once(
    pair: tuple[LocalRedis, LocalRedis],
) -> None:
    master, replica = pair
    with hotparams.connect(master.url, min_replica_acks=1, replica_ack_timeout=0.2) as bus:
        bus.register("pair", PairParams)
        with master.client() as client:
            client.function_flush()
        assert bus.set("pair", {"a": 1, "b": 1}) == 2
        assert [c.version for c in bus.history("pair", limit=5)] == [2, 1]  # applied once
        with replica.client() as client:
            assert client.hget("hp:{pair}:meta", "version") == b"2"
