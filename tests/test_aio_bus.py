"""The asyncio bus is a twin of the sync one: same operations, same results."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

import fakeredis.aioredis
import pytest

import hotparams
from hotparams import aio

from .models import ChatParams


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(getattr(cls, name))
        for name in dir(cls)
        if not name.startswith("_") and callable(getattr(cls, name))
    }


def test_bus_and_async_bus_expose_the_same_methods_with_the_same_parameters() -> None:
    sync, asyncio_ = _public(hotparams.Bus), _public(aio.AsyncBus)
    assert sync.pop("close") and asyncio_.pop("aclose")
    assert {"set_many", "set_variant", "workers", "convergence", "diff", "watch"} <= set(sync)
    assert set(sync) == set(asyncio_)
    for name, signature in sync.items():
        twin = asyncio_[name]
        assert list(twin.parameters.values()) == list(signature.parameters.values()), name


def test_every_async_bus_method_returns_a_coroutine_of_the_sync_result() -> None:
    async def scenario() -> None:
        abus = aio.AsyncBus(fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer()))
        for call in (
            abus.namespaces(),
            abus.register("chat", ChatParams),
            abus.head("chat"),
            abus.set("chat", {"temperature": 0.5}),
            abus.get("chat", ChatParams),
        ):
            assert inspect.iscoroutine(call)
            await call
        assert (await abus.get("chat", ChatParams)).params.temperature == 0.5
        await abus.aclose()

    asyncio.run(scenario())


@pytest.fixture(params=["redis", "fakeredis"])
def make_abus(request: pytest.FixtureRequest) -> Callable[[], aio.AsyncBus]:
    """Builds the bus inside the test's own event loop (asyncio clients are per loop)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return lambda: aio.connect(url)
    import fakeredis.aioredis

    server = fakeredis.FakeServer()
    return lambda: aio.AsyncBus(fakeredis.aioredis.FakeRedis(server=server))


def test_the_async_bus_writes_and_reads_like_the_sync_one(
    make_abus: Callable[[], aio.AsyncBus],
) -> None:
    async def scenario() -> None:
        async with make_abus() as abus:
            await steps(abus)

    async def steps(abus: aio.AsyncBus) -> None:
        await abus.register("chat", ChatParams, retention=5)
        assert await abus.set("chat", {"temperature": 0.2}, author="ana") == 2
        assert await abus.set_many([("chat", {"top_p": 0.5}), ("chat", {"max_tokens": 9})]) == [
            3,
            4,
        ]
        assert await abus.set_variant("chat", "cool", {"temperature": 0.1}, percent=10) == 5
        assert (await abus.variants("chat")).variants["cool"].percent == 10
        assert set(await abus.diff("chat", 1, 4)) == {"temperature", "top_p", "max_tokens"}
        assert await abus.rollback("chat", 2) == 6
        snap = await abus.get("chat", ChatParams)
        assert (snap.params.temperature, snap.params.top_p) == (0.2, 1.0)
        assert await abus.secret_fields("chat") == {"api_key"}
        assert await abus.workers("chat") == []
        assert (await abus.convergence("chat")).target == 6
        with pytest.raises(hotparams.InvalidParams):
            await abus.set("chat", {"temperature": 9})
        with pytest.raises(hotparams.VersionConflict):
            await abus.set("chat", {"temperature": 0.3}, expect_version=1)
        assert [c.version for c in await abus.history("chat", limit=3)] == [6, 5, 4]

    asyncio.run(scenario())
