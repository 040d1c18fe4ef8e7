"""asyncio twins of :class:`~hotparams.Bus` and :class:`~hotparams.Live`, on ``redis.asyncio``.

::

    from hotparams import aio

    bus = aio.connect("redis://127.0.0.1:6379/0")
    live = await bus.watch("chat", ChatParams)
    live.current.params.temperature      # no lock, no I/O, no await
    await live.aclose()
    await bus.aclose()

Both run the same I/O-free code as the sync ones: the operations of
:class:`hotparams.core.BusCore` (the public methods of both buses, written
once) and the loops of :mod:`hotparams.runner`.  Nothing here
decides anything; it awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, overload

import redis.asyncio as aredis
from pydantic import BaseModel
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from . import follow as listener
from . import reporting as reporter
from . import runner
from .clients import (
    async_client,
    async_follower_client,
    async_own_client,
    async_refresh_slots,
    async_shard_name,
    async_shard_pubsub,
)
from .config import Settings, redact_url, settings_from
from .core import BusCore, WatchOptions
from .drivers import aperform
from .driving import aconverse
from .errors import ConnectionFailed
from .handle import Handle
from .protocol import Op, Wire
from .schema import ParamSchema
from .snapshot import Snapshot
from .subscription import AsyncHub, messages_of

if TYPE_CHECKING:
    pass

__all__ = ["AsyncBus", "AsyncLive", "connect"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

log = logging.getLogger("hotparams.live")


#: how long aclose() lets the reporter send its last exposure counts and leave
_FAREWELL = 0.5


def connect(url: str = "redis://127.0.0.1:6379/0", **settings: Any) -> AsyncBus:
    """An :class:`AsyncBus` for the Redis at ``url``; settings as :func:`hotparams.connect`."""
    s = settings_from(settings)
    return AsyncBus(async_client(url, s), settings=s, url=url)


def _send(client: aredis.Redis, *args: Any) -> Any:
    """One raw command (redis-py leaves ``execute_command`` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


class AsyncBus(BusCore):
    """A connection to one Redis, for asyncio code: the twin of
    :class:`hotparams.Bus`, the same operations (:class:`~hotparams.core.BusCore`)
    awaited; each public method returns a coroutine of the Bus method's result."""

    def __init__(
        self, client: aredis.Redis, *, settings: Settings | None = None, url: str = "redis://"
    ) -> None:
        super().__init__(settings, url)
        self.client = client
        self._reports: AsyncBus | None = None
        self._follower: AsyncBus | None = None
        #: aclose() began: the handles' reports stop (none goes out after it)
        self._closing = False

    def __repr__(self) -> str:
        return f"<hotparams.aio.AsyncBus {redact_url(self.url)}>"

    async def run(self, op: Op[T]) -> T:
        """Run an operation of :mod:`hotparams.protocol` to its result."""
        return await aconverse(self.serve(op), self.perform)

    async def drive(self, wire: Generator[Wire, Any, T]) -> T:
        """Perform calls that need no library check (the library's own)."""
        return await aconverse(wire, self.perform)

    async def perform(self, wire: Wire) -> Any:
        return await aperform(self.client, self.url, wire)

    @overload
    async def get(
        self, namespace: str, model: type[M], *, version: int | None = None
    ) -> Snapshot[M]: ...

    @overload
    async def get(
        self, namespace: str, model: None = None, *, version: int | None = None
    ) -> Snapshot[Any]: ...

    async def get(
        self, namespace: str, model: type[M] | None = None, *, version: int | None = None
    ) -> Snapshot[Any]:
        """As :meth:`hotparams.Bus.get`."""
        return await self.run(self._get(namespace, model, version))

    async def watch(
        self, namespace: str, model: type[M], **options: Unpack[WatchOptions]
    ) -> AsyncLive[M]:
        """As :meth:`hotparams.Bus.watch`: an :class:`AsyncLive` with its first snapshot."""
        live = AsyncLive(self, namespace, self._schema_for_watch(namespace, model), **options)
        await live._start()
        return live

    def _reporting_bus(self) -> AsyncBus:
        """The bus the handles' fleet reports go through: one attempt per
        call, on a pool of its own (shared by this bus's handles), so that a
        report hung on a frozen Redis, cut by cancelling its task, never
        holds a connection the application's calls need."""
        if self._reports is None:
            settings = self.settings.model_copy(update={"retry_attempts": 1})
            self._reports = AsyncBus(async_own_client(self.client), settings=settings, url=self.url)
        return self._reports

    def _following(self) -> AsyncBus:
        """As :meth:`hotparams.Bus._following`."""
        if self._follower is None and (settings := self._follower_settings()) is not None:
            client = async_follower_client(self.url, self.settings)
            self._follower = AsyncBus(client, settings=settings, url=self.url)
        return self._follower or self

    async def aclose(self) -> None:
        self._closing = True
        pump, self._pump = self._pump, None
        if pump is not None and pump[0] == os.getpid():  # no report goes out after this
            await pump[1].stop()
        follower, self._follower = self._follower, None
        if follower is not None:
            await follower.aclose()
        reports, self._reports = self._reports, None
        if reports is not None:
            await reports.aclose()
            if not isinstance(reports.client, AsyncRedisCluster):  # aclose() closed its nodes
                await reports.client.connection_pool.disconnect()
        await self.client.aclose()

    async def __aenter__(self) -> AsyncBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncLive(Handle[M]):
    """The current version of one namespace, kept up to date by asyncio tasks.

    :attr:`current` is a plain attribute: read it without ``await``.  Made
    by :meth:`AsyncBus.watch`; close it with :meth:`aclose`.  Its tasks run
    the conversations of :mod:`hotparams.runner` (written once for both
    handles) on the event loop that made it; its waits may be awaited on
    any loop.  In a process forked from the one that made it, it follows
    again on a loop of its own (a daemon thread), under its own worker id
    and over connections of its own.
    """

    def __init__(
        self, bus: AsyncBus, namespace: str, schema: ParamSchema[M], **options: Unpack[WatchOptions]
    ) -> None:
        super().__init__(namespace, schema, settings=bus.settings, url=bus.url, **options)
        self._bus = bus
        self._act = functools.partial(runner.perform, self)
        self._init_runtime()

    def _init_runtime(self) -> None:
        """Tasks, primitives and connections: made again in a forked child."""
        bus = self._bus
        #: where the listener subscribes and reads: the bus, or a replica's (follow_replicas)
        self._follow = bus._following()
        # the listener and the reporter do their own backoff: one attempt per call
        settings = self._follow.settings.model_copy(update={"retry_attempts": 1})
        self._reader = AsyncBus(self._follow.client, settings=settings, url=bus.url)
        # fleet reports go over the bus's reporting pool (shared by its handles)
        #: the shared subscription this handle joined: (hub, channel, inbox)
        self._joined: tuple[AsyncHub, str, asyncio.Queue[Any]] | None = None
        self._changed = asyncio.Condition()
        self._queue: asyncio.Queue[tuple[Snapshot[M] | None, Snapshot[M]] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._reported = asyncio.Event()  # the reporter's first call is done
        #: the report pump of this process's handles on the bus, once joined
        self._reports: _AsyncReports | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _start(self) -> None:
        cached = await asyncio.to_thread(self._cached) if self.cache else None
        await aconverse(
            listener.start(self._tracker, self._keys, cached=cached, defaults=self._defaults),
            self._act,
        )
        assert self._tracker.view is not None
        self._install(self._tracker.view)
        if self._tracker.origin == "redis":
            self._queue.put_nowait((None, self.current))  # save it to the cache
        self._start_tasks()
        if self._tracker.origin == "redis":
            await self._until_joined(self._bus.settings.connect_timeout)
        _handles.add(self)

    def _start_tasks(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._dispatch(), name="hotparams-callbacks"),
            asyncio.create_task(self._listen(), name="hotparams-live"),
        ]
        self._reports = _reports(self._bus)
        self._reports.join(self._reporter, self._reported.set)

    async def _until_joined(self, wait: float) -> None:
        """As the sync handle: normally subscribed and reported within milliseconds."""
        deadline = time.monotonic() + wait
        if await self.wait_until(lambda _: self._tracker.connected, wait):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reported.wait(), deadline - time.monotonic())

    async def wait_until(self, predicate: Callable[[Snapshot[M]], bool], timeout: float) -> bool:
        """Wait until ``predicate(current)`` holds (True) or ``timeout`` passes (False)."""
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            return await self._on_own_loop(self.wait_until(predicate, timeout))
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: predicate(self.current)), timeout
                )
            except TimeoutError:
                return False
        return True

    async def wait_for(self, version: int, timeout: float = 10.0) -> bool:
        """Wait until the served version is at least ``version``."""
        return await self.wait_until(lambda snap: snap.version >= version, timeout)

    async def _on_own_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the loop the handle runs on (from another loop)."""
        assert self._loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def aclose(self) -> None:
        """Stop the tasks and drop the subscription; idempotent."""
        if self._closed:
            return
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            await self._on_own_loop(self.aclose())
            return
        self._closed = True
        _handles.discard(self)
        dispatcher, listener = self._tasks or (None, None)
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        self._queue.put_nowait(None)
        if dispatcher is not None:
            await dispatcher
        reports, self._reports = self._reports, None
        if reports is not None:  # the last counts, then leave the fleet
            await reports.leave(self._reporter, _FAREWELL)
        await self._leave()
        self._tracker.connected = False
        self._observer.connection(False)

    async def __aenter__(self) -> AsyncLive[M]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _after_fork(self) -> None:
        """In a child process: the parent's loop, tasks and sockets are not
        ours; follow on a loop of our own, over new connections."""
        if self._closed or self._loop is None:
            return
        self._tracker.restarted()
        self._new_worker()  # this process's own worker id and exposure counts
        # the parent's connections are never touched again here
        self._bus = AsyncBus(
            async_own_client(self._bus.client), settings=self._bus.settings, url=self._bus.url
        )
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="hotparams-aio-fork", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._restart(), loop).result()

    async def _restart(self) -> None:
        self._init_runtime()
        self._start_tasks()

    # ------------------------------------------------------------ the three tasks

    async def _listen(self) -> None:
        s = self._bus.settings
        try:
            await aconverse(
                listener.follow(self._tracker, self._keys, s, time.monotonic), self._act
            )
        finally:
            await self._leave()

    async def _dispatch(self) -> None:
        await aconverse(runner.dispatching(self), self._act)

    # ------------------------------------------------------------ listener actions

    async def _subscribe(self, action: listener.Subscribe) -> None:
        await self._leave()
        client = self._follow.client
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        try:
            hub = await _hub(self._follow, action.channel)
            await hub.join(action.channel, inbox)
        except aredis.ResponseError as exc:  # MOVED: the slot has another owner now
            await async_refresh_slots(client)
            raise ConnectionFailed(redact_url(self._bus.url), f"SSUBSCRIBE: {exc}") from None
        except (aredis.ConnectionError, aredis.TimeoutError, ConnectionFailed):
            await async_refresh_slots(client)  # the node died: who serves it now?
            raise
        self._joined = (hub, action.channel, inbox)

    async def _receive(self, action: listener.Receive) -> list[Any]:
        assert self._joined is not None
        inbox = self._joined[2]
        try:
            async with asyncio.timeout(action.timeout):
                batch = messages_of(self._bus.url, await inbox.get())
        except TimeoutError:
            return []
        while len(batch) < listener.MAX_BATCH and not inbox.empty():  # whatever came meanwhile
            batch += messages_of(self._bus.url, inbox.get_nowait())
        return batch

    async def _ping(self, action: listener.Ping) -> str | None:
        assert self._joined is not None
        return await self._joined[0].ping(action.since)

    async def _read(self, action: listener.Read) -> Any:
        bus = self._follow if action.patient else self._reader
        joined = self._joined
        if action.shared is not None and joined is not None:
            return await joined[0].shared(action.shared, lambda: bus.run(action.op), action.since)
        return await bus.run(action.op)

    async def _publish(self, action: listener.Publish) -> None:
        self._install(action.view)  # the reference readers see
        async with self._changed:
            self._changed.notify_all()
        if self._dispatching():
            self._queue.put_nowait((action.old, action.view.base))
        self._touch_reporter()

    async def _pause(self, action: listener.Pause) -> None:
        await asyncio.sleep(action.seconds)

    async def _reset(self, action: listener.Reset) -> None:
        await self._leave(dead=action.dead)

    async def _signal(self, action: listener.Status) -> None:
        async with self._changed:
            self._changed.notify_all()
        self._touch_reporter()

    async def _leave(self, *, dead: bool = False) -> None:
        """Leave the shared subscription (see hotparams.subscription)."""
        joined, self._joined = self._joined, None
        if joined is not None:
            hub, channel, inbox = joined
            await hub.leave(channel, inbox, dead=dead)

    # ------------------------------------------------------------ reporter actions

    def _touch_reporter(self) -> None:
        if self._reporter.touch() and self._reports is not None:
            self._reports.wake(change=True)

    # ------------------------------------------------------------ dispatcher actions

    async def _take(self, action: runner.Take) -> Any:
        if action.block:
            return await self._queue.get()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return runner.EMPTY

    async def _store(self, action: runner.Store) -> None:
        await asyncio.to_thread(self._save, action.snap)

    async def _notify(self, action: runner.Notify) -> None:
        result = action.call()
        if inspect.isawaitable(result):
            await result


# ---------------------------------------------------------------- fleet reports


class _AsyncReports:
    """As :class:`hotparams.live._Reports`, on a task: the fleet reports of
    this process's handles on one bus, over the bus's reporting pool."""

    def __init__(self, bus: AsyncBus) -> None:
        self.pump = reporter.Pump()
        self._bus = bus
        self._wake = asyncio.Event()
        self._asleep_until = math.inf  # as hotparams.live._Reports
        self._task: asyncio.Task[None] | None = None

    def join(self, r: reporter.Reporter, tried: Callable[[], None]) -> None:
        if self.pump.join(r, tried) and not self._bus._closing:
            self._start()
        self.wake()

    async def leave(self, r: reporter.Reporter, wait: float) -> None:
        if self._bus._closing:  # the reports stopped with the bus
            return
        done = asyncio.Event()
        if self.pump.leave(r, done.set):
            self._start()
        self.wake()
        try:
            await asyncio.wait_for(done.wait(), wait)
        except TimeoutError:  # Redis does not answer: give up on leaving
            task = self._task
            if task is not None and not self.pump.members():  # nobody else waits for it
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def wake(self, *, change: bool = False) -> None:
        """As :meth:`hotparams.live._Reports.wake`."""
        if change and not reporter.wakes(self._asleep_until, time.monotonic()):
            return
        self._wake.set()

    async def stop(self) -> None:
        """End the task now (the bus closes): what it was sending is dropped."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():  # a handle on a loop of its own
            task.get_loop().call_soon_threadsafe(task.cancel)
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hotparams-report")

    async def _run(self) -> None:
        writer = self._bus._reporting_bus()
        act = functools.partial(_pump_act, self, writer)
        try:
            await aconverse(reporter.pumping(self.pump), act)
        except asyncio.CancelledError:
            self.pump.cancelled()
            raise

    async def _idle(self, action: reporter.Idle) -> None:
        self._asleep_until = time.monotonic() + action.timeout
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), action.timeout)
        finally:
            self._asleep_until = math.inf
        self._wake.clear()


async def _pump_act(reports: _AsyncReports, writer: AsyncBus, action: reporter.Action) -> Any:
    if isinstance(action, reporter.Write):
        return await writer.run(action.op)
    return await reports._idle(action)


def _reports(bus: AsyncBus) -> _AsyncReports:
    """The report pump of this process's handles on ``bus``."""
    pid = os.getpid()
    pump: tuple[int, _AsyncReports] | None = bus._pump
    if pump is None or pump[0] != pid:
        pump = (pid, _AsyncReports(bus))
        bus._pump = pump
    return pump[1]


# ---------------------------------------------------------------- shared subscriptions


async def _hub(bus: AsyncBus, channel: str) -> AsyncHub:
    """The shared subscription of this process to the node serving ``channel``."""
    key = (os.getpid(), await async_shard_name(bus.client, channel))
    hub: AsyncHub | None = bus._hubs.get(key)
    if hub is None:
        client = bus.client
        hub = AsyncHub(
            lambda ch: async_shard_pubsub(client, ch), bus.url, bus.settings.socket_timeout
        )
        bus._hubs[key] = hub
    return hub


# ---------------------------------------------------------------- fork safety

_handles: weakref.WeakSet[AsyncLive[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handle in list(_handles):
        handle._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
