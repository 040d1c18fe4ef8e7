"""Fan-out from replicas (``follow_replicas``): the handles subscribe and read
on a replica found through the sentinels, the master takes the writes and
the fleet reports; a plain URL is refused with a reason."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

import hotparams
from hotparams import aio
from hotparams.server import redis_server_binary

from .conftest import need
from .helpers import wait_until
from .models import PairParams
from .sentinel import SentinelGroup, wait_replicated

NS = "pair"


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    """Nothing here kills a node: one group for the module."""
    need(redis_server_binary() is not None, "redis-server (on PATH)")
    with SentinelGroup(replicas=1) as started:
        wait_replicated(started.master, 1)
        yield started


def subscribers(port: int) -> int:
    """hotparams' clients of the server at ``port`` holding a subscription (the
    sentinels' own hello subscriptions are not counted)."""
    with redis.Redis(port=port, socket_timeout=2) as client:
        clients = client.client_list()
    return sum(
        1
        for c in clients
        if c.get("name") == "hotparams" and int(c.get("ssub", 0)) + int(c.get("sub", 0)) > 0
    )


def test_a_plain_url_cannot_follow_replicas(redis_url: str) -> None:
    with pytest.raises(hotparams.ConfigError, match="redis\\+sentinel://"):
        hotparams.connect(redis_url, follow_replicas=True)
    with pytest.raises(hotparams.ConfigError, match="redis\\+sentinel://"):
        aio.connect(redis_url, follow_replicas=True)


def test_handles_subscribe_on_the_replica_and_the_master_takes_the_writes(
    group: SentinelGroup,
) -> None:
    master, replica = group.master, group.replicas[0]
    with hotparams.connect(group.url(), follow_replicas=True, reconcile_interval=0.5) as bus:
        bus.register(NS, PairParams)
        with bus.watch(NS, PairParams) as live:
            assert subscribers(replica.port) == 1 and subscribers(master.port) == 0
            version = bus.set(NS, {"a": 4, "b": 4})  # on the master, replicated, published
            assert live.wait_for(version, 5)
            assert (live.current.params.a, live.current.params.b) == (4, 4)
            # redis-cli on the master reaches the handle on the replica too
            with redis.Redis(port=master.port) as raw:
                edited = int(raw.execute_command("FCALL", "hp_set", "1", NS, "a", "5"))
            assert live.wait_for(edited, 5) and live.current.params.a == 5
            # the fleet report went to the master (writes never go to a replica)
            assert wait_until(lambda: [w.id for w in bus.workers(NS)] == [live.worker_id])
            assert live.status().connected and not live.stale


def test_an_asyncio_handle_follows_from_the_replica(group: SentinelGroup) -> None:
    async def scenario() -> None:
        async with aio.connect(group.url(), follow_replicas=True, reconcile_interval=0.5) as bus:
            await bus.register(NS, PairParams)
            live = await bus.watch(NS, PairParams)
            try:
                assert subscribers(group.replicas[0].port) == 1
                assert subscribers(group.master.port) == 0
                version = await bus.set(NS, {"b": 7})
                assert await live.wait_for(version, 5)
                assert live.current.params.b == 7
            finally:
                await live.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 30))
