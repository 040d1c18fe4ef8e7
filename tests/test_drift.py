"""The sync and asyncio handles behave alike: each drift of the hand-made
twins (issue 12) pinned on both, now that the runner is written once."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from typing import Any

import pytest

import hotparams
from hotparams import aio
from hotparams.server import LocalRedis

from .helpers import wait_until
from .models import ChatParams, PairParams

CTX = multiprocessing.get_context("fork")


def test_both_handles_take_the_reconcile_interval_from_the_settings(redis_url: str) -> None:
    with hotparams.connect(redis_url, reconcile_interval=0.7) as bus:
        bus.register("pair", PairParams)
        with bus.watch("pair", PairParams) as live:
            assert live._tracker.reconcile_interval == 0.7
        direct = hotparams.Live(bus, "pair", bus._schema_for_watch("pair", PairParams))
        assert direct._tracker.reconcile_interval == 0.7  # not only through watch()
        direct.close()

    async def main() -> None:
        async with aio.connect(redis_url, reconcile_interval=0.7) as abus:
            live = await abus.watch("pair", PairParams)
            assert live._tracker.reconcile_interval == 0.7
            await live.aclose()
            direct = aio.AsyncLive(
                abus, "pair", abus._schema_for_watch("pair", PairParams), cache=None
            )
            assert direct._tracker.reconcile_interval == 0.7

    asyncio.run(main())


def test_both_handles_log_each_failed_reconnect(
    private_redis: LocalRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hotparams.live")
    settings = {"reconcile_interval": 0.2, "reconnect_base_wait": 0.05, "reconnect_max_wait": 0.1}
    bus = hotparams.connect(private_redis.url, **settings)
    bus.register("pair", PairParams)

    def failed(kind: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if "reconnect attempt" in r.getMessage() and r.threadName.startswith(kind)
        ]

    async def main() -> None:
        async with aio.connect(private_redis.url, **settings) as abus:
            alive = await abus.watch("pair", PairParams)
            with bus.watch("pair", PairParams) as live:
                private_redis.stop()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not (
                    len(failed("hotparams-live")) >= 2 and len(failed("MainThread")) >= 2
                ):
                    await asyncio.sleep(0.02)
                assert not live.connected and not alive.connected
            await alive.aclose()

    try:
        asyncio.run(main())
    finally:
        bus.close()
    # the thread's listener and the task's (it runs in the main thread) alike
    assert len(failed("hotparams-live")) >= 2, caplog.text
    assert len(failed("MainThread")) >= 2, caplog.text
    assert all("ConnectionError" in m or "Connection" in m for m in failed("MainThread"))


def test_an_async_close_is_prompt_even_while_redis_is_frozen(private_redis: LocalRedis) -> None:
    async def main() -> None:
        abus = aio.connect(private_redis.url, reconcile_interval=0.2)  # socket timeout: 5 s
        await abus.register("pair", PairParams)
        live = await abus.watch("pair", PairParams)
        # the reporter's calls go through a pool of its own: cutting it leaves the bus's alone
        assert abus._reporting_bus().client.connection_pool is not abus.client.connection_pool
        private_redis.freeze()
        try:
            await asyncio.sleep(0.6)  # the reconcile probe waits for a reply that will not come
            started = time.monotonic()
            await live.aclose()
            assert time.monotonic() - started < 2.0
            assert live.current.version == 1  # reads never depended on Redis
        finally:
            private_redis.thaw()
        assert (await abus.head("pair")).version == 1  # the bus is unharmed
        await abus.aclose()

    asyncio.run(asyncio.wait_for(main(), 30))


def _child(live: aio.AsyncLive[ChatParams], parent_id: str, reports: Any) -> None:
    """In a forked child: the inherited asyncio handle follows on its own."""

    async def main() -> None:
        ready = await live.wait_until(lambda _: live.connected, 10)
        reports.put(("ready", os.getpid(), ready, live.worker_id != parent_id))
        changed = await live.wait_until(lambda snap: snap.params.temperature == 1.5, 10)
        reports.put(("changed", os.getpid(), changed, live.current.version))
        await live.aclose()

    asyncio.run(main())


def test_an_async_handle_made_before_fork_follows_changes_in_the_child(redis_url: str) -> None:
    async def watch() -> tuple[aio.AsyncBus, aio.AsyncLive[ChatParams]]:
        abus = aio.connect(redis_url, reconcile_interval=0.5)
        await abus.register("chat", ChatParams)
        return abus, await abus.watch("chat", ChatParams)

    loop = asyncio.new_event_loop()
    abus, live = loop.run_until_complete(watch())
    bus = hotparams.connect(redis_url)
    reports: Any = CTX.Queue()
    proc = CTX.Process(target=_child, args=(live, live.worker_id, reports))
    try:
        proc.start()
        ready = reports.get(timeout=20)
        assert ready[0] == "ready" and ready[2] and ready[3], ready  # its own worker id
        assert wait_until(lambda: any(w.pid == proc.pid for w in bus.workers("chat")))
        v2 = bus.set("chat", {"temperature": 1.5})
        changed = reports.get(timeout=20)
        assert changed == ("changed", proc.pid, True, v2), changed
        # the parent's handle, on its own loop, is unaffected
        assert loop.run_until_complete(live.wait_for(v2, 10))
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        loop.run_until_complete(live.aclose())
        loop.run_until_complete(abus.aclose())
        loop.close()
        bus.close()
    assert proc.exitcode == 0
