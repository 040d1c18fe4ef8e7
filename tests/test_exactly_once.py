"""Exactly-once writes: a write whose reply is lost and that the Bus sends
again (same request id) is applied once and answers the first attempt's
version; a compare-and-set loop through a proxy that drops replies
increments exactly once per iteration."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis

import hotparams
from hotparams import aio
from hotparams.keys import keys_for
from hotparams.library import library_source
from hotparams.server import LocalRedis

from .helpers import dump_namespace
from .models import PairParams
from .proxy import ReplyDropper

NS = "counter"
#: the Bus retries at once, and a lost reply costs one reconnect
QUICK: dict[str, Any] = {"socket_timeout": 2.0, "retry_max_wait": 0.05}


class Counter(PairParams):
    pass


@pytest.fixture
def upstream(redis_server: LocalRedis, redis_url: str) -> Iterator[redis.Redis]:
    client = redis_server.client(decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def dropper(redis_server: LocalRedis, redis_url: str) -> Iterator[ReplyDropper]:
    proxy = ReplyDropper(redis_server.port, b"hp_", every=2)
    proxy.enabled = False
    yield proxy
    proxy.close()


def audit_ops(client: redis.Redis, ns: str = NS) -> list[str]:
    return [f["op"] for _, f in client.xrange(keys_for(ns).audit)]


@pytest.mark.parametrize("with_model", [True, False], ids=["model", "no-model"])
def test_a_compare_and_set_loop_through_lost_replies_increments_exactly_once(
    redis_url: str, dropper: ReplyDropper, upstream: redis.Redis, with_model: bool
) -> None:
    setup = hotparams.connect(redis_url)
    setup.register(NS, PairParams)
    bus = hotparams.connect(dropper.url, **QUICK)
    if with_model:
        bus.bind(NS, PairParams)
    dropper.needle, dropper.limit = b"hp_commit", 100
    dropper.enabled = True  # every other hp_commit loses its reply: each first attempt
    conflicts = 0
    for _ in range(100):
        for _attempt in range(5):
            snap = bus.get(NS)
            try:
                bus.set(NS, {"a": snap.values["a"] + 1}, expect_version=snap.version)
                break
            except hotparams.VersionConflict:
                conflicts += 1
    dropper.enabled = False
    assert dropper.dropped == 100
    final = setup.get(NS)
    assert (final.values["a"], final.version) == (100, 101), conflicts
    assert conflicts == 0
    assert audit_ops(upstream) == ["init"] + ["set"] * 100
    bus.close()
    setup.close()


def _writes(bus: hotparams.Bus) -> dict[str, Callable[[], int]]:
    return {
        "set": lambda: bus.set(NS, {"a": 7}, expect_version=2),
        "unset": lambda: bus.unset(NS, ["a"], expect_version=2),
        "set_variant": lambda: bus.set_variant(NS, "t", {"b": 5}, percent=50, expect_version=2),
        "remove_variant": lambda: bus.remove_variant(NS, "t", expect_version=3),
        "rollback": lambda: bus.rollback(NS, 1, expect_version=2),
        "restore": lambda: bus.restore(NS, {"a": 3, "b": 3}, model=PairParams),
        "set_many": lambda: bus.set_many([(NS, {"a": 9})])[0],
    }


WRITES = ["set", "unset", "set_variant", "remove_variant", "rollback", "set_many"]
CASES = [(w, m) for w in WRITES for m in (True, False)] + [("restore", True)]


@pytest.mark.parametrize(("write", "with_model"), CASES)
def test_every_write_whose_reply_is_lost_is_applied_once(
    redis_url: str,
    dropper: ReplyDropper,
    upstream: redis.Redis,
    write: str,
    with_model: bool,
) -> None:
    setup = hotparams.connect(redis_url)
    setup.register(NS, PairParams)
    setup.set(NS, {"a": 1})  # version 2
    if write == "remove_variant":
        setup.set_variant(NS, "t", {"b": 5}, percent=50)  # version 3
    bus = hotparams.connect(dropper.url, **QUICK)
    if with_model:
        bus.bind(NS, PairParams)
    bus.get(NS)  # the Bus knows the current state (no read on the write path)
    before = setup.head(NS).version
    dropper.needle = b"hp_commit" if write != "rollback" else b"hp_rollback"
    dropper.every, dropper.limit = 1, 1
    dropper.enabled = True
    version = _writes(bus)[write]()
    dropper.enabled = False
    assert dropper.dropped == 1
    assert version == before + 1 == setup.head(NS).version
    assert len(audit_ops(upstream)) == before + 1  # one entry per version, no more
    bus.close()
    setup.close()


def test_the_async_bus_reuses_the_request_id_of_a_lost_reply(
    redis_url: str, dropper: ReplyDropper, upstream: redis.Redis
) -> None:
    setup = hotparams.connect(redis_url)
    setup.register(NS, PairParams)

    async def main() -> int:
        abus = aio.connect(dropper.url, **QUICK)
        try:
            await abus.get(NS)
            dropper.needle, dropper.every, dropper.limit = b"hp_commit", 1, 1
            dropper.enabled = True
            return await abus.set(NS, {"a": 1}, expect_version=1)
        finally:
            dropper.enabled = False
            await abus.aclose()

    assert asyncio.run(main()) == 2
    assert dropper.dropped == 1
    assert audit_ops(upstream) == ["init", "set"]
    setup.close()


@pytest.fixture(params=["redis", "fakeredis"])
def raw_bus(request: pytest.FixtureRequest) -> Iterator[hotparams.Bus]:
    if request.param == "redis":
        b = hotparams.connect(request.getfixturevalue("redis_url"))
    else:
        b = hotparams.Bus(fakeredis.FakeRedis(server=fakeredis.FakeServer()), url="fakeredis://")
    b.register(NS, PairParams)
    yield b
    b.close()


def fcall(bus: hotparams.Bus, *args: str) -> Any:
    return bus.client.execute_command("FCALL", args[0], 1, NS, *args[1:])  # type: ignore[no-untyped-call]


def test_a_repeated_request_id_answers_the_first_version_and_writes_nothing(
    raw_bus: hotparams.Bus,
) -> None:
    assert fcall(raw_bus, "hp_commit", "a", "1", "@expect", "1", "@rid", "r-1") == 2
    dump = dump_namespace(raw_bus.client, NS)
    # a retry: the state has moved on since (a conflict for a new request)
    assert fcall(raw_bus, "hp_commit", "a", "1", "@expect", "1", "@rid", "r-1") == 2
    assert fcall(raw_bus, "hp_set", "a", "1", "@rid", "r-1") == 2
    assert fcall(raw_bus, "hp_rollback", "1", "@rid", "r-1") == 2
    assert dump_namespace(raw_bus.client, NS) == dump
    assert fcall(raw_bus, "hp_commit", "a", "2", "@rid", "r-2") == 3
    with pytest.raises(redis.ResponseError, match="HP_CONFLICT"):
        fcall(raw_bus, "hp_commit", "a", "3", "@expect", "1", "@rid", "r-3")


def test_a_refused_request_records_nothing_and_may_be_sent_again(raw_bus: hotparams.Bus) -> None:
    dump = dump_namespace(raw_bus.client, NS)
    with pytest.raises(redis.ResponseError, match="HP_INVALID"):
        fcall(raw_bus, "hp_commit", "a", '"x"', "@rid", "r-1")
    with pytest.raises(redis.ResponseError, match="HP_BADARG"):
        fcall(raw_bus, "hp_commit", "a", "1", "@rid", "bad id!")
    with pytest.raises(redis.ResponseError, match="HP_BADARG"):
        fcall(raw_bus, "hp_commit", "a", "1", "@rid", "x" * 65)
    assert dump_namespace(raw_bus.client, NS) == dump  # a refusal writes nothing
    assert fcall(raw_bus, "hp_commit", "a", "1", "@rid", "r-1") == 2


def _lua_constant(name: str) -> int:
    match = re.search(rf"local {name} = (\d+)", library_source())
    assert match, name
    return int(match.group(1))


REQUEST_IDS_KEPT = _lua_constant("REQUEST_IDS_KEPT")
REQUEST_IDS_TTL_MS = _lua_constant("REQUEST_IDS_TTL_MS")


@pytest.mark.slow  # thousands of Lua calls, on fakeredis too
def test_request_ids_are_kept_bounded_in_count_and_time(raw_bus: hotparams.Bus) -> None:
    keys = keys_for(NS)
    client = raw_bus.client
    pipe = client.pipeline(transaction=False)
    for i in range(REQUEST_IDS_KEPT + 50):
        pipe.execute_command("FCALL", "hp_commit", 1, NS, "a", str(i + 1), "@rid", f"r-{i}")
    pipe.execute()
    assert client.zcard(keys.requests_at) == REQUEST_IDS_KEPT
    assert client.hlen(keys.requests) == REQUEST_IDS_KEPT
    assert client.hget(keys.requests, "r-0") is None  # the oldest went first
    newest = f"r-{REQUEST_IDS_KEPT + 49}"
    assert int(client.hget(keys.requests, newest)) == REQUEST_IDS_KEPT + 51
    for key in (keys.requests, keys.requests_at):
        assert 0 < client.pttl(key) <= REQUEST_IDS_TTL_MS  # an idle namespace forgets them
    # an id older than the window is forgotten by the next write
    old_ms = int(client.zscore(keys.requests_at, newest)) - REQUEST_IDS_TTL_MS - 1
    client.zadd(keys.requests_at, {"r-old": old_ms})
    client.hset(keys.requests, "r-old", "2")
    fcall(raw_bus, "hp_commit", "a", "-1", "@rid", "r-last")
    assert client.hget(keys.requests, "r-old") is None
    assert client.zscore(keys.requests_at, "r-old") is None
