"""Bus.check: a dry run of a change with every check of a write, nothing written."""

from __future__ import annotations

import asyncio

import pytest

import hotparams
from hotparams.aio import AsyncBus
from hotparams.aio import connect as connect_async

from .helpers import dump_namespace
from .models import ChatParams


def test_check_refuses_what_a_write_refuses_with_the_rules_messages_and_writes_nothing(
    bus: hotparams.Bus,
) -> None:
    bus.register("chat", ChatParams)
    raw = hotparams.Bus(bus.client, url=bus.url)  # no model bound: Redis's rules alone
    before = dump_namespace(bus.client, "chat")
    with pytest.raises(hotparams.InvalidParams) as bad:
        raw.check("chat", {"temperature": 5, "nope": 1})
    assert bad.value.errors == {"temperature": "must be <= 2 (got 5)", "nope": "unknown field"}
    with pytest.raises(hotparams.VersionConflict):
        raw.check("chat", {"temperature": 0.5}, expect_version=7)
    assert raw.check("chat", {"temperature": 0.5}, expect_version=1) == 1
    assert raw.check("chat", {}, unset=["temperature"]) == 1
    assert dump_namespace(bus.client, "chat") == before
    assert bus.get("chat").params.temperature == 0.7


def test_check_with_a_bound_model_also_runs_its_cross_field_rules(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    before = dump_namespace(bus.client, "chat")
    with pytest.raises(hotparams.InvalidParams) as bad:
        bus.check("chat", {"quiet_from": 5})
    assert bad.value.errors == {"*": "quiet_from must be <= quiet_to"}
    assert dump_namespace(bus.client, "chat") == before


def test_the_async_check_is_the_same_dry_run(redis_url: str) -> None:
    async def main() -> None:
        abus: AsyncBus = connect_async(redis_url)
        try:
            await abus.register("chat", ChatParams)
            with pytest.raises(hotparams.InvalidParams):
                await abus.check("chat", {"temperature": 5})
            assert await abus.check("chat", {"temperature": 1.5}) == 1
            assert (await abus.get("chat")).version == 1
        finally:
            await abus.aclose()

    asyncio.run(main())
