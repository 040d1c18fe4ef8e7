"""The asyncio bus is a twin of the sync one: same operations, same results."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

import pytest

import hotparams
from hotparams import aio

from .models import ChatParams

SYNC_ONLY = {"close", "run", "execute", "load_library", "masked_values"}


def test_every_public_bus_operation_has_an_async_twin() -> None:
    names = {
        n
        for n, v in vars(hotparams.Bus).items()
        if not n.startswith("_") and callable(v) and n not in SYNC_ONLY
    }
    assert {"set_many", "set_variant", "workers", "convergence", "diff"} <= names
    for name in sorted(names):
        twin = getattr(aio.AsyncBus, name, None)
        assert twin is not None, name
        if name not in {"bind", "schema_of"}:
            assert inspect.iscoroutinefunction(twin), name
            assert list(inspect.signature(twin).parameters) == list(
                inspect.signature(getattr(hotparams.Bus, name)).parameters
            ), name


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
