"""The asyncio twins: AsyncBus drives the same operations, AsyncLive the same listener."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

import hotparams
from hotparams import aio, lkg
from hotparams.server import LocalRedis

from .models import ChatParams, PairParams

Factory = Callable[[], aio.AsyncBus]


@pytest.fixture(params=["redis", "fakeredis"])
def make_bus(request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Makes an AsyncBus inside the running loop (a client belongs to one loop)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        yield lambda: aio.connect(url, reconcile_interval=0.2)
    else:
        server = fakeredis.FakeServer()
        settings = hotparams.Settings(reconcile_interval=0.2)
        yield lambda: aio.AsyncBus(
            fakeredis.FakeAsyncRedis(server=server), settings=settings, url="fakeredis://"
        )


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 30))


async def until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_the_async_bus_runs_the_same_operations(make_bus: Factory) -> None:
    async def main() -> None:
        async with make_bus() as bus:
            registered = await bus.register("chat", ChatParams)
            assert (registered.version, registered.created) == (1, True)
            v = await bus.set("chat", {"temperature": 0.9}, author="ana", reason="warmer")
            snap = await bus.get("chat", ChatParams)
            assert (snap.version, snap.params.temperature) == (v, 0.9)
            with pytest.raises(hotparams.InvalidParams):
                await bus.set("chat", {"temperature": 5})
            with pytest.raises(hotparams.VersionConflict):
                await bus.set("chat", {"max_tokens": 9}, expect_version=v - 1)
            assert (await bus.head("chat")).version == v
            v2 = await bus.unset("chat", ["temperature"])
            v3 = await bus.rollback("chat", v)
            assert (await bus.get("chat", ChatParams)).params.temperature == 0.9
            history = await bus.history("chat", limit=3)
            assert [c.version for c in history] == [v3, v2, v]
            assert history[0].op == "rollback"
            assert await bus.restore("chat", {"temperature": 0.1}) == v3 + 1
            assert (await bus.get("chat", ChatParams)).params.max_tokens == 512
            with pytest.raises(hotparams.NamespaceNotFound):
                await bus.head("nothing")

    run(main)


def test_an_async_live_handle_follows_changes_with_async_callbacks(make_bus: Factory) -> None:
    async def main() -> None:
        async with make_bus() as bus:
            await bus.register("pair", PairParams)
            live = await bus.watch("pair", PairParams)
            assert live.connected and live.current.version == 1
            seen: list[int] = []
            noted: list[str] = []

            async def slow(old: hotparams.Snapshot[Any], new: hotparams.Snapshot[Any]) -> None:
                await asyncio.sleep(0)
                seen.append(new.version)

            def broken(old: hotparams.Snapshot[Any], new: hotparams.Snapshot[Any]) -> None:
                raise RuntimeError("user bug")

            live.on_change(broken)
            live.on_change(slow)
            live.on_change(lambda old, new: noted.append(new.params.note), fields={"note"})
            for i in range(1, 21):
                v = await bus.set("pair", {"a": i, "b": i})
            await bus.set("pair", {"note": "n"})
            v = await bus.set("pair", {"a": 0, "b": 0})
            assert await live.wait_for(v)
            held = live.current
            assert (held.params.a, held.params.b) == (0, 0)
            assert await until(lambda: bool(seen) and seen[-1] == v)
            assert seen == sorted(set(seen)) and noted == ["n"]
            assert live.callback_errors == len(seen)
            status = live.status()
            assert status.connected and not status.stale
            await live.aclose()
            await live.aclose()
            assert not live.connected
        leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith("hotparams")]
        assert not leftover

    run(main)


def test_an_async_handle_survives_flushall_and_follows_a_new_history(make_bus: Factory) -> None:
    async def main() -> None:
        async with make_bus() as bus:
            await bus.register("pair", PairParams)
            async with await bus.watch("pair", PairParams) as live:
                v = await bus.set("pair", {"a": 8, "b": 8})
                assert await live.wait_for(v)
                epoch = live.current.epoch
                await bus.client.flushall()
                assert await until(lambda: live.lost)
                assert live.current.params.a == 8 and live.stale
                assert await bus.restore("pair", live.current) == 1
                assert await until(lambda: live.current.epoch != epoch)
                assert (live.current.version, live.current.params.a) == (1, 8)
                assert live.status().epoch_changes == 1

    run(main)


@pytest.mark.slow
def test_an_async_handle_reconnects_after_a_restart_and_keeps_its_cache(tmp_path: Path) -> None:
    server = LocalRedis().start()
    cache = tmp_path / "pair.json"

    async def main() -> None:
        bus = aio.connect(
            server.url, reconcile_interval=0.2, socket_timeout=0.5, reconnect_base_wait=0.05
        )
        await bus.register("pair", PairParams)
        live = await bus.watch("pair", PairParams, cache=cache)
        v = await bus.set("pair", {"a": 4, "b": 4})
        assert await live.wait_for(v)
        assert await until(lambda: cache.exists() and lkg.read(cache)["version"] == v)
        server.restart()  # empty: no keys, no functions
        assert await until(lambda: live.lost)
        assert live.current.params.a == 4
        await bus.register("pair", PairParams, initial={"a": 1, "b": 1})
        assert await until(lambda: live.current.params.a == 1 and not live.lost)
        assert live.connected
        await live.aclose()
        await bus.aclose()

    try:
        run(main)
    finally:
        server.close()


@pytest.fixture(params=["redis", "fakeredis"])
def both(request: pytest.FixtureRequest) -> Iterator[tuple[hotparams.Bus, Factory]]:
    """A sync Bus (to set variants, read reports) and an AsyncBus factory on one server."""
    settings = hotparams.Settings(reconcile_interval=0.2, exposure_interval=0.2)
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        sync = hotparams.connect(url)
        yield sync, lambda: aio.connect(url, **settings.model_dump())
    else:
        server = fakeredis.FakeServer()
        sync = hotparams.Bus(fakeredis.FakeRedis(server=server), url="fakeredis://")
        yield (
            sync,
            lambda: aio.AsyncBus(
                fakeredis.FakeAsyncRedis(server=server), settings=settings, url="fakeredis://"
            ),
        )
    sync.close()


def test_an_async_handle_serves_variants_counts_exposures_and_reports_itself(
    both: tuple[hotparams.Bus, Factory],
) -> None:
    sync, make = both
    sync.register("chat", ChatParams)
    v = sync.set_variant("chat", "cool", {"temperature": 0.3}, percent=50)
    variants = sync.variants("chat")
    users = [f"u{i}" for i in range(500)]

    async def main() -> None:
        async with make() as bus:
            live = await bus.watch("chat", ChatParams, worker_name="api-1")
            assert live.current.version == v
            for user in users:
                snap = live.for_user(user)
                assert snap.variant == variants.assign("chat", user)
                assert snap.params.temperature == (0.3 if snap.variant else 0.7)
            assert await until(lambda: [r.name for r in sync.workers("chat")] == ["api-1"])
            v2 = sync.set("chat", {"max_tokens": 64})
            assert await until(lambda: [r.version for r in sync.workers("chat")] == [v2])
            (report,) = sync.workers("chat")
            assert report.id == live.worker_id and report.connected
            assert live.for_user(users[0]).params.max_tokens == 64
            await live.aclose()
            assert sync.workers("chat") == []  # left the fleet
        leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith("hotparams")]
        assert not leftover

    run(main)
    expected = Counter(variants.assign("chat", u) for u in [*users, users[0]])
    assert sync.exposures("chat") == dict(expected)  # flushed on aclose()


def test_closing_an_async_bus_stops_its_reports_even_with_a_handle_still_open(
    redis_url: str,
) -> None:
    """aclose() closes the connections the report task uses: the task ends
    with it (it used to go on, reconnecting, past the bus's end), and the
    handle closed afterwards sends nothing."""

    async def main() -> None:
        bus = aio.connect(redis_url, report_interval=0.05)
        await bus.register("closing", PairParams)
        live = await bus.watch("closing", PairParams)
        assert await until(lambda: any(t.get_name() == "hotparams-report" for t in tasks()))
        await bus.aclose()
        assert [t.get_name() for t in tasks() if t.get_name() == "hotparams-report"] == []
        await live.aclose()
        assert [t.get_name() for t in tasks() if t.get_name().startswith("hotparams")] == []

    def tasks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if not t.done()]

    run(main)
