"""The replies hotparams reads as plain commands (``XREVRANGE`` for the
history, ``HGETALL`` for exposure counts) decode alike in RESP2 and RESP3,
sync and asyncio: redis-py hands both as dicts, so there is one parser."""

from __future__ import annotations

import asyncio

import pytest

import hotparams
from hotparams.aio import AsyncBus

from .models import ChatParams


@pytest.mark.parametrize("resp", [2, 3])
def test_history_and_exposures_read_the_same_in_resp2_and_resp3(redis_url: str, resp: int) -> None:
    url = f"{redis_url}?protocol={resp}"
    with hotparams.connect(url) as bus:
        bus.register("chat", ChatParams)
        bus.set("chat", {"temperature": 1.1}, author="ana", reason="warmer")
        bus.set_variant("chat", "cool", {"temperature": 0.2}, percent=50)
        salt = bus.variants("chat").salt
        bus.record_exposures("chat", salt, {"cool": 3, None: 2})
        history = bus.history("chat")
        assert [(c.version, c.op) for c in history] == [(3, "variant"), (2, "set"), (1, "init")]
        assert (history[1].author, history[1].reason) == ("ana", "warmer")
        assert history[1].changes["temperature"].new == 1.1
        assert bus.exposures("chat") == {"cool": 3, None: 2}

    async def asynchronously() -> None:
        abus: AsyncBus = hotparams.aio.connect(url)
        try:
            assert [c.version for c in await abus.history("chat")] == [3, 2, 1]
            assert await abus.exposures("chat") == {"cool": 3, None: 2}
        finally:
            await abus.aclose()

    asyncio.run(asynchronously())
