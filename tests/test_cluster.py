"""hotparams on a Redis Cluster of real processes (tests/cluster.py): three
primaries, a namespace on each, the library on every primary."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import hotparams
from hotparams import aio
from hotparams.server import LocalRedis
from tests.cluster import Cluster, namespaces_on_each_primary
from tests.helpers import wait_until
from tests.models import ChatParams

from .conftest import need


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One cluster for the tests that leave its slots where they are."""
    need(shutil.which("redis-cli") is not None, "redis-cli (redis-tools)")
    with Cluster() as started:
        yield started


@pytest.fixture
def names(cluster: Cluster) -> Iterator[list[str]]:
    """A namespace on each primary, emptied (keys and functions) before the test."""
    for node in cluster.nodes:
        with node.client() as client:
            client.flushall()
            client.function_flush()
            client.config_resetstat()
    yield namespaces_on_each_primary(cluster)


def _getkeys(cluster: Cluster) -> int:
    """COMMAND GETKEYS calls the nodes served: none, an FCALL is routed by its key."""
    total = 0
    for node in cluster.nodes:
        with node.client() as client:
            stats = client.info("commandstats")
            total += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
    return total


def _functions(cluster: Cluster) -> list[list[str]]:
    """The libraries each primary runs."""
    out = []
    for node in cluster.nodes:
        with node.client() as client:
            listed = client.function_list()
            libraries = [dict(zip(lib[::2], lib[1::2], strict=True)) for lib in listed]
            out.append([lib[b"library_name"].decode() for lib in libraries])
    return out


def test_a_bus_on_a_cluster_writes_and_reads_a_namespace_on_every_shard(
    cluster: Cluster, names: list[str]
) -> None:
    with hotparams.connect(cluster.url) as bus:
        for i, ns in enumerate(names):
            bus.register(ns, ChatParams)
            bus.set(ns, {"temperature": 0.1 * (i + 1), "system_prompt": f"shard {i}"})
        assert _functions(cluster) == [["hotparams"]] * 3  # loaded on every primary
        for i, ns in enumerate(names):
            snap = bus.get(ns, ChatParams)
            assert (snap.version, snap.params.system_prompt) == (2, f"shard {i}")
            assert snap.params.temperature == pytest.approx(0.1 * (i + 1))
        assert _getkeys(cluster) == 0  # (a pipeline, as in namespaces(), still asks)
        # a scan of every primary, then one pipeline split over the nodes
        listed = {info.namespace: info.version for info in bus.namespaces()}
        assert listed == dict.fromkeys(names, 2)
        assert [c.version for c in bus.history(names[2])] == [2, 1]


def test_a_primary_that_lost_its_functions_gets_the_library_again(
    cluster: Cluster, names: list[str]
) -> None:
    with hotparams.connect(cluster.url) as bus:
        for ns in names:
            bus.register(ns, ChatParams)
        flushed = cluster.owner(names[1])
        with flushed.client() as client:
            client.function_flush()
        assert sorted(map(len, _functions(cluster))) == [0, 1, 1]
        assert bus.set(names[1], {"model": "gpt-4o"}) == 2  # reloaded there, then written
        assert _functions(cluster) == [["hotparams"]] * 3
        assert bus.get(names[1], ChatParams).params.model == "gpt-4o"


def test_redis_cli_edits_with_dash_c_work_from_any_node(cluster: Cluster, names: list[str]) -> None:
    with hotparams.connect(cluster.url) as bus:
        for ns in names:
            bus.register(ns, ChatParams)
        for node, ns in zip(cluster.nodes, reversed(names), strict=True):
            reply = cluster.cli(node, "FCALL", "hp_set", "1", ns, "max_tokens", "777")
            assert reply == "2", reply
        for ns in names:
            assert bus.get(ns, ChatParams).params.max_tokens == 777


def test_an_asyncio_bus_on_a_cluster_loads_writes_and_reads(
    cluster: Cluster, names: list[str]
) -> None:
    import asyncio

    async def main() -> None:
        async with aio.connect(cluster.url) as bus:
            for i, ns in enumerate(names):
                await bus.register(ns, ChatParams)
                await bus.set(ns, {"max_tokens": 100 + i})
            assert _functions(cluster) == [["hotparams"]] * 3
            for i, ns in enumerate(names):
                assert (await bus.get(ns, ChatParams)).params.max_tokens == 100 + i
            assert _getkeys(cluster) == 0
            listed = {info.namespace for info in await bus.namespaces()}
            assert listed == set(names)
            with cluster.owner(names[0]).client() as client:
                client.function_flush()
            assert await bus.set(names[0], {"max_tokens": 5}) == 3
            assert _functions(cluster) == [["hotparams"]] * 3

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 10


def _subscribers(node: LocalRedis) -> int:
    """Connections of ``node`` with a sharded subscription."""
    with node.client() as client:
        return sum(1 for c in client.client_list() if c.get("ssub") == "1")


def _max_tokens(handles: list[Any]) -> list[int]:
    return [h.current.params.max_tokens for h in handles]


def test_one_process_follows_namespaces_on_every_shard(cluster: Cluster, names: list[str]) -> None:
    """Each handle subscribes (SSUBSCRIBE) on the primary owning its
    namespace; Bus writes, redis-cli -c edits from another node and a write
    after FUNCTION FLUSH on one primary all reach the handles."""
    with hotparams.connect(cluster.url) as bus:
        for ns in names:
            bus.register(ns, ChatParams)
        handles = [bus.watch(ns, ChatParams, reconcile_interval=30) for ns in names]
        try:
            owners = [cluster.owner(ns) for ns in names]
            assert [_subscribers(node) for node in owners] == [1, 1, 1]
            for i, ns in enumerate(names):
                bus.set(ns, {"max_tokens": 10 + i})
            assert wait_until(lambda: _max_tokens(handles) == [10, 11, 12], timeout=5)
            for node, ns in zip(cluster.nodes, reversed(names), strict=True):
                cluster.cli(node, "FCALL", "hp_set", "1", ns, "max_tokens", "20")
            assert wait_until(lambda: _max_tokens(handles) == [20, 20, 20], timeout=5)
            with owners[2].client() as client:
                client.function_flush()
            assert bus.set(names[2], {"max_tokens": 30}) == 4
            assert wait_until(lambda: _max_tokens(handles) == [20, 20, 30], timeout=5)
            assert [h.current.version for h in handles] == [3, 3, 4]
            assert all(h.connected for h in handles)
        finally:
            for handle in handles:
                handle.close()


def test_one_asyncio_process_follows_namespaces_on_every_shard(
    cluster: Cluster, names: list[str]
) -> None:
    import asyncio

    async def until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def main() -> None:
        async with aio.connect(cluster.url) as bus:
            for ns in names:
                await bus.register(ns, ChatParams)
            handles = [await bus.watch(ns, ChatParams, reconcile_interval=30) for ns in names]
            assert [_subscribers(cluster.owner(ns)) for ns in names] == [1, 1, 1]
            for i, ns in enumerate(names):
                await bus.set(ns, {"max_tokens": 40 + i})
            assert await until(lambda: _max_tokens(handles) == [40, 41, 42])
            for node, ns in zip(cluster.nodes, names[1:] + names[:1], strict=True):
                edit = ("FCALL", "hp_set", "1", ns, "top_p", "0.5")
                await asyncio.to_thread(cluster.cli, node, *edit)
            assert await until(lambda: [h.current.params.top_p for h in handles] == [0.5] * 3)
            for handle in handles:
                await handle.aclose()
            assert [_subscribers(node) for node in cluster.nodes] == [0, 0, 0]

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_handle_whose_slot_migrates_resubscribes_at_the_new_owner(
    cluster: Cluster, names: list[str]
) -> None:
    """The old owner ends the sharded subscription (sunsubscribe) when the
    slot leaves it; the handle subscribes again where the slot went, re-reads
    and serves the next change."""
    ns = names[0]
    source, target = cluster.owner(ns), cluster.owner(names[1])
    slot = cluster.keyslot(ns)
    with hotparams.connect(cluster.url) as bus:
        bus.register(ns, ChatParams)
        live = bus.watch(ns, ChatParams, reconcile_interval=30)
        try:
            assert (_subscribers(source), _subscribers(target)) == (1, 0)
            cluster.migrate_slot(slot, source, target)
            try:
                assert cluster.owner(ns).port == target.port
                assert wait_until(lambda: _subscribers(target) == 1, timeout=10)
                assert _subscribers(source) == 0
                assert bus.set(ns, {"max_tokens": 99}) == 2
                assert wait_until(lambda: live.current.params.max_tokens == 99, timeout=5)
                assert live.current.version == 2 and live.connected
            finally:
                cluster.migrate_slot(slot, target, source)
            assert wait_until(lambda: _subscribers(source) == 1, timeout=10)
            assert bus.set(ns, {"max_tokens": 98}) == 3
            assert wait_until(lambda: live.current.params.max_tokens == 98, timeout=5)
        finally:
            live.close()


def test_a_primary_failover_moves_writes_and_handles_to_the_promoted_replica() -> None:
    """SIGKILL the primary of a followed namespace (each primary has a
    replica): the replica takes over within the cluster's node timeout (2 s
    here); the Bus's next write is retried until it lands there, and the
    handle, whose subscription died with the node, asks the cluster for the
    slots again, subscribes on the new primary and serves that write."""
    need(shutil.which("redis-cli") is not None, "redis-cli (redis-tools)")
    with Cluster(replicas=1) as cluster:
        ns = namespaces_on_each_primary(cluster)[0]
        url = cluster.url
        with hotparams.connect(
            url, retry_attempts=100, retry_deadline=15, reconnect_max_wait=0.5
        ) as bus:
            bus.register(ns, ChatParams)
            bus.set(ns, {"max_tokens": 1})
            live = bus.watch(ns, ChatParams, reconcile_interval=30)
            try:
                old = cluster.owner(ns)
                with old.client() as client:  # the replica has every write so far
                    assert client.execute_command("WAIT", 1, 5000) == 1
                killed = time.monotonic()
                old.stop()
                assert bus.set(ns, {"max_tokens": 2}) == 3
                took = time.monotonic() - killed
                new = cluster.owner(ns)
                assert new.port != old.port
                assert wait_until(lambda: live.current.params.max_tokens == 2, timeout=10)
                assert live.current.version == 3 and live.connected
                assert _subscribers(new) == 1
                assert took < 10, took
            finally:
                live.close()


def test_an_asyncio_handle_follows_a_primary_failover() -> None:
    """As the sync handle: the AsyncLive's subscription dies with the
    primary; it asks the cluster for the slots again, subscribes on the
    promoted replica and serves the write that landed there."""
    import asyncio

    need(shutil.which("redis-cli") is not None, "redis-cli (redis-tools)")

    async def until(check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def main(cluster: Cluster, ns: str) -> None:
        settings = {"retry_attempts": 100, "retry_deadline": 15, "reconnect_max_wait": 0.5}
        async with aio.connect(cluster.url, **settings) as bus:
            await bus.register(ns, ChatParams)
            await bus.set(ns, {"max_tokens": 1})
            live = await bus.watch(ns, ChatParams, reconcile_interval=30)
            old = cluster.owner(ns)
            with old.client() as client:  # the replica has every write so far
                assert client.execute_command("WAIT", 1, 5000) == 1
            old.stop()
            assert await bus.set(ns, {"max_tokens": 2}) == 3
            assert cluster.owner(ns).port != old.port
            assert await until(lambda: live.current.params.max_tokens == 2, timeout=10)
            assert live.current.version == 3 and live.connected
            assert _subscribers(cluster.owner(ns)) == 1
            await live.aclose()

    with Cluster(replicas=1) as cluster:
        ns = namespaces_on_each_primary(cluster)[1]
        asyncio.run(asyncio.wait_for(main(cluster, ns), 30))
