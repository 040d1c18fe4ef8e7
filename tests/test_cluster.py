"""hotparams on a Redis Cluster of real processes (tests/cluster.py): three
primaries, a namespace on each, the library on every primary."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

import hotparams
from hotparams import aio
from tests.cluster import Cluster, namespaces_on_each_primary
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
    yield namespaces_on_each_primary(cluster)


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
            listed = {info.namespace for info in await bus.namespaces()}
            assert listed == set(names)
            with cluster.owner(names[0]).client() as client:
                client.function_flush()
            assert await bus.set(names[0], {"max_tokens": 5}) == 3
            assert _functions(cluster) == [["hotparams"]] * 3

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 10
