"""asyncio twins of :class:`~hotparams.Bus` and :class:`~hotparams.Live`, on ``redis.asyncio``.

::

    from hotparams import aio

    bus = aio.connect("redis://127.0.0.1:6379/0")
    live = await bus.watch("chat", ChatParams)
    live.current.params.temperature      # no lock, no I/O, no await
    await live.aclose()
    await bus.aclose()

Both drive the same I/O-free code as the sync ones: the operations of
:mod:`hotparams.protocol` and the listener phases of :mod:`hotparams.follow`
(decided by :class:`hotparams.tracker.Tracker`).  Nothing here decides
anything; it awaits.  An :class:`AsyncLive` belongs to the event loop that
made it and does not survive ``fork()`` (use the sync handle there).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

import redis.asyncio as aredis
from pydantic import BaseModel
from redis.asyncio.client import PubSub
from redis.exceptions import ResponseError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from . import follow
from .clients import async_client
from .config import Settings, redact_url, settings_from
from .connection import TRANSIENT, describe, first_retry_wait, retry_policy
from .core import BusCore
from .errors import ConnectionFailed, ProtocolError
from .fleet import Convergence, WorkerReport
from .follow import (
    MAX_BATCH,
    Action,
    Ping,
    Publish,
    Read,
    Receive,
    Subscribe,
    listen,
    start,
)
from .handle import Handle
from .library import Installed
from .lifecycle import Migration, NamespaceInfo, NamespaceSettings
from .protocol import (
    Batch,
    Call,
    Head,
    LibraryMissing,
    Op,
    Registered,
    Scan,
    decode_error,
    text,
)
from .reporting import Idle, Write, farewell, reporting
from .schema import ParamSchema
from .snapshot import Change, FieldChange, Snapshot
from .variants import VariantSet
from .views import View

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["AsyncBus", "AsyncLive", "connect"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


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
    :class:`hotparams.Bus`, running the same operations with ``await``."""

    def __init__(
        self, client: aredis.Redis, *, settings: Settings | None = None, url: str = "redis://"
    ) -> None:
        super().__init__(settings, url)
        self.client = client
        self._library_checked = False
        self._library_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<hotparams.aio.AsyncBus {redact_url(self.url)}>"

    # ------------------------------------------------------------ driving

    async def run(self, op: Op[T]) -> T:
        """Drive an operation generator of :mod:`hotparams.protocol` to its result."""
        return await self._drive(self.sealing(op), self.execute)

    async def _drive(self, op: Op[T], execute: Callable[[Call], Awaitable[Any]]) -> T:
        try:
            call = next(op)
            while True:
                try:
                    reply = await execute(call)
                except Exception as exc:  # thrown into the op, which may handle it
                    call = op.throw(exc)
                else:
                    call = op.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def execute(self, call: Call) -> Any:
        """One call, with retries on connection errors and library reloads."""
        await self._ensure_library()
        try:
            return await self._send_call(call)
        except LibraryMissing:
            pass
        self._library_checked = False
        await self._ensure_library()
        try:
            return await self._send_call(call)
        except LibraryMissing as exc:
            raise ProtocolError(f"Redis lacks a hotparams function: {exc}") from None

    async def _send_call(self, call: Call) -> Any:
        """One call with retries and its error decoded; no library check."""
        if isinstance(call, Batch):
            return await self._execute_batch(call)
        if isinstance(call, Scan):
            scan = call

            async def scan_all() -> list[Any]:
                found = self.client.scan_iter(match=scan.pattern, count=1000, _type=scan.kind)
                return [key async for key in found]

            return await self._with_retry(scan_all)
        args = call.command()
        try:
            return await self._with_retry(lambda: _send(self.client, *args))
        except ResponseError as exc:
            raise decode_error(call.namespace, exc) from None

    async def _execute_batch(self, batch: Batch) -> list[Any]:
        async def send_all() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for call in batch.calls:
                pipe.execute_command(*call.command())
            return await pipe.execute(raise_on_error=False)

        replies = await self._with_retry(send_all)
        return [
            decode_error(call.namespace, reply) if isinstance(reply, ResponseError) else reply
            for call, reply in zip(batch.calls, replies, strict=True)
        ]

    async def _with_retry(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """``await fn()`` with the retry policy of :mod:`hotparams.connection`."""
        try:
            return await fn()
        except TRANSIENT as exc:
            error: BaseException = exc
        if self.settings.retry_attempts > 1:

            async def attempt() -> Any:
                return await fn()

            await asyncio.sleep(first_retry_wait())
            try:
                return await AsyncRetrying(**retry_policy(self.settings))(attempt)
            except TRANSIENT as exc:
                error = exc
        raise ConnectionFailed(redact_url(self.url), describe(error, self.url)) from None

    async def _ensure_library(self) -> None:
        if self._library_checked:
            return
        async with self._library_lock:
            if not self._library_checked:
                await self._drive(self.op_library(), self._send_call)
                self._library_checked = True

    async def install(self) -> Installed:
        """As :meth:`hotparams.Bus.install`."""
        async with self._library_lock:
            result = await self._drive(self.op_install(), self._send_call)
            self._library_checked = True
            return result

    async def load_library(self) -> None:
        """As :meth:`hotparams.Bus.load_library`."""
        self._library_checked = False
        await self._ensure_library()

    # ------------------------------------------------------------ writes
    # each method: as the hotparams.Bus method of the same name

    async def register(
        self,
        namespace: str,
        model: type[BaseModel],
        *,
        initial: Mapping[str, Any] | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
        retention: int | None = None,
        audit_maxlen: int | None = None,
        max_value_bytes: int | None = None,
        allow_raw_writes: bool = False,
    ) -> Registered:
        """As :meth:`hotparams.Bus.register`."""
        return await self.run(
            self.op_register(
                namespace,
                model,
                initial=initial,
                author=author,
                reason=reason,
                source=source,
                retention=retention,
                audit_maxlen=audit_maxlen,
                max_value_bytes=max_value_bytes,
                allow_raw_writes=allow_raw_writes,
            )
        )

    async def set(
        self,
        namespace: str,
        changes: Mapping[str, Any],
        *,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """As :meth:`hotparams.Bus.set`."""
        return await self.run(
            self.op_commit(
                namespace,
                changes,
                (),
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    async def check(
        self,
        namespace: str,
        changes: Mapping[str, Any],
        *,
        unset: Iterable[str] = (),
        expect_version: int | None = None,
    ) -> int:
        """As :meth:`hotparams.Bus.check`."""
        return await self.run(
            self.op_check(namespace, changes, unset, expect_version=expect_version)
        )

    async def unset(
        self,
        namespace: str,
        fields: Iterable[str],
        *,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """As :meth:`hotparams.Bus.unset`."""
        return await self.run(
            self.op_commit(
                namespace,
                {},
                fields,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    async def set_many(
        self,
        items: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> list[int]:
        """As :meth:`hotparams.Bus.set_many`."""
        return await self.run(self.op_set_many(items, author=author, reason=reason, source=source))

    async def set_variant(
        self,
        namespace: str,
        name: str,
        overrides: Mapping[str, Any] | None = None,
        *,
        percent: float | None = None,
        users: Iterable[str] | None = None,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """As :meth:`hotparams.Bus.set_variant`."""
        return await self.run(
            self.op_variant(
                namespace,
                name,
                overrides=overrides,
                percent=percent,
                users=users,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    async def remove_variant(
        self,
        namespace: str,
        name: str,
        *,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """As :meth:`hotparams.Bus.remove_variant`."""
        return await self.run(
            self.op_variant(
                namespace,
                name,
                remove=True,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    async def rollback(
        self,
        namespace: str,
        version: int,
        *,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """As :meth:`hotparams.Bus.rollback`."""
        return await self.run(
            self.op_rollback(
                namespace,
                version,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    async def restore(
        self,
        namespace: str,
        values: Snapshot[Any] | Mapping[str, Any],
        *,
        model: type[BaseModel] | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """As :meth:`hotparams.Bus.restore`."""
        return await self.run(
            self.op_restore(
                namespace, values, model=model, author=author, reason=reason, source=source
            )
        )

    # ------------------------------------------------------------ lifecycle

    async def configure(
        self,
        namespace: str,
        *,
        retention: int | None = None,
        audit_maxlen: int | None = None,
        max_value_bytes: int | None = None,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> NamespaceSettings:
        """As :meth:`hotparams.Bus.configure`."""
        return await self.run(
            self.op_configure(
                namespace,
                retention=retention,
                audit_maxlen=audit_maxlen,
                max_value_bytes=max_value_bytes,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    async def migrate(
        self,
        namespace: str,
        model: type[BaseModel],
        *,
        drop: Iterable[str] = (),
        rename: Mapping[str, str] | None = None,
        dry_run: bool = False,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> Migration:
        """As :meth:`hotparams.Bus.migrate`."""
        return await self.run(
            self.op_migrate(
                namespace,
                model,
                drop=drop,
                rename=rename or {},
                dry_run=dry_run,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    async def delete(
        self,
        namespace: str,
        *,
        expect_version: int | None = None,
        author: str | None = None,
        reason: str = "",
        source: str = "",
    ) -> int:
        """As :meth:`hotparams.Bus.delete`."""
        return await self.run(
            self.op_delete(
                namespace,
                expect_version=expect_version,
                author=author,
                reason=reason,
                source=source,
            )
        )

    async def rotate_secrets(
        self, namespace: str, *, author: str | None = None, reason: str = "", source: str = ""
    ) -> tuple[int, int, tuple[str, ...]]:
        """Re-encrypt every secret value of ``namespace`` (and of its A/B
        variants) with the first secret key: a new version, audited as
        ``rotate``.  Returns (previous version, new version, the fields)."""
        return await self.run(
            self.op_rotate_secrets(namespace, author=author, reason=reason, source=source)
        )

    async def namespaces(self) -> list[NamespaceInfo]:
        """As :meth:`hotparams.Bus.namespaces`."""
        return await self.run(self.op_namespaces())

    # ------------------------------------------------------------ reads

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
        return await self.run(self.op_get(namespace, model, version))

    async def head(self, namespace: str) -> Head:
        return await self.run(self.op_head(namespace))

    async def history(self, namespace: str, limit: int = 50) -> list[Change]:
        return await self.run(self.op_history(namespace, limit))

    async def diff(self, namespace: str, a: int, b: int) -> dict[str, FieldChange]:
        return await self.run(self.op_diff(namespace, a, b))

    async def rules(self, namespace: str) -> dict[str, Any]:
        return await self.run(self.op_rules(namespace))

    async def secret_fields(self, namespace: str) -> frozenset[str]:
        return await self.run(self.op_secret_fields(namespace))

    async def variants(self, namespace: str) -> VariantSet:
        return await self.run(self.op_variants(namespace))

    # ------------------------------------------------------------ fleet

    async def workers(self, namespace: str) -> list[WorkerReport]:
        return await self.run(self.op_workers(namespace))

    async def convergence(self, namespace: str, version: int | None = None) -> Convergence:
        return await self.run(self.op_convergence(namespace, version))

    async def record_exposures(
        self, namespace: str, salt: str, counts: dict[str | None, int]
    ) -> None:
        await self.run(self.op_record_exposures(namespace, salt, counts))

    async def exposures(self, namespace: str) -> dict[str | None, int]:
        return await self.run(self.op_exposures(namespace))

    async def watch(
        self,
        namespace: str,
        model: type[M],
        *,
        cache: str | os.PathLike[str] | None = None,
        defaults: bool = False,
        reconcile_interval: float | None = None,
        worker_name: str = "",
        metrics: Metrics | None = None,
    ) -> AsyncLive[M]:
        """As :meth:`hotparams.Bus.watch`: an :class:`AsyncLive` with its first snapshot."""
        schema = self._schema_for_watch(namespace, model)
        live = AsyncLive(
            self,
            namespace,
            schema,
            cache=cache,
            reconcile_interval=reconcile_interval or self.settings.reconcile_interval,
            worker_name=worker_name,
            metrics=metrics,
        )
        await live._start(defaults)
        return live

    # ------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> AsyncBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncLive(Handle[M]):
    """The current version of one namespace, kept up to date by an asyncio task.

    :attr:`current` is a plain attribute: read it without ``await``.  Made
    by :meth:`AsyncBus.watch`; close it with :meth:`aclose`.
    """

    def __init__(
        self,
        bus: AsyncBus,
        namespace: str,
        schema: ParamSchema[M],
        *,
        cache: str | os.PathLike[str] | None,
        reconcile_interval: float,
        worker_name: str = "",
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            namespace,
            schema,
            cache=cache,
            reconcile_interval=reconcile_interval,
            settings=bus.settings,
            worker_name=worker_name,
            metrics=metrics,
            url=bus.url,
        )
        self._bus = bus
        s = bus.settings
        # the listener and the reporter do their own backoff: one attempt per call
        reader_settings = s.model_copy(update={"retry_attempts": 1})
        self._reader = AsyncBus(bus.client, settings=reader_settings, url=bus.url)
        self._report_bus = AsyncBus(bus.client, settings=reader_settings, url=bus.url)
        self._pubsub: PubSub | None = None
        self._changed = asyncio.Condition()
        self._queue: asyncio.Queue[tuple[Snapshot[M] | None, Snapshot[M]] | None] = asyncio.Queue()
        self._listener: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._reporting: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # the reporter: something to report

    async def _start(self, defaults: bool) -> None:
        cached = await asyncio.to_thread(self._cached) if self.cache else None
        await self._drive(start(self._tracker, self._keys, cached=cached, defaults=defaults))
        assert self._tracker.view is not None
        self._install(self._tracker.view)
        if self._tracker.origin == "redis":
            self._queue.put_nowait((None, self.current))
        self._dispatcher = asyncio.create_task(self._dispatch(), name="hotparams-callbacks")
        self._listener = asyncio.create_task(self._listen(), name="hotparams-live")
        self._reporting = asyncio.create_task(self._report(), name="hotparams-report")
        if self._tracker.origin == "redis":
            wait = self._bus.settings.connect_timeout
            deadline = time.monotonic() + wait
            if await self.wait_until(lambda _: self._tracker.connected, wait):
                # listed by bus.workers() once watch() returns
                while not self._reporter.attempted and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)

    async def wait_until(self, predicate: Callable[[Snapshot[M]], bool], timeout: float) -> bool:
        """Wait until ``predicate(current)`` holds (True) or ``timeout`` passes (False)."""
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

    async def aclose(self) -> None:
        """Stop the tasks and drop the subscription; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()  # the reporter sends its last counts and leaves the fleet
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        self._queue.put_nowait(None)
        if self._dispatcher is not None:
            await self._dispatcher
        if self._reporting is not None:
            done, _ = await asyncio.wait({self._reporting}, timeout=_FAREWELL)
            if not done:  # Redis does not answer: give up on leaving
                self._reporting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reporting
        await self._drop_pubsub()
        self._tracker.connected = False
        self._observer.connection(False)

    async def __aenter__(self) -> AsyncLive[M]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ listener

    async def _listen(self) -> None:
        tracker, keys = self._tracker, self._keys
        s = self._bus.settings
        first = True
        while True:
            try:
                if not first:  # many workers lose Redis at once: do not come back at once
                    await asyncio.sleep(random.uniform(0, s.reconnect_base_wait))
                first = False
                async for attempt in AsyncRetrying(
                    wait=wait_random_exponential(
                        multiplier=s.reconnect_base_wait, max=s.reconnect_max_wait
                    ),
                    retry=retry_if_exception_type(Exception),
                    before_sleep=self._before_sleep,
                    reraise=True,
                ):
                    with attempt:
                        await self._drive(follow.connect(tracker, keys))
                async with self._changed:
                    self._changed.notify_all()
                self._touch_reporter()
                await self._drive(listen(tracker, keys, time.monotonic))
            except Exception as exc:
                tracker.connection(False, exc)
                self._touch_reporter()
            finally:
                await self._drop_pubsub()

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            self._tracker.connection(False, exc)

    async def _drive(self, phase: Generator[Action, Any, T]) -> T:
        try:
            action = next(phase)
            while True:
                try:
                    result = await self._perform(action)
                except Exception as exc:
                    action = phase.throw(exc)
                else:
                    action = phase.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            phase.close()

    async def _perform(self, action: Action) -> Any:
        if isinstance(action, Receive):
            return await self._receive(action.timeout)
        if isinstance(action, Read):
            return await (self._bus if action.patient else self._reader).run(action.op)
        if isinstance(action, Publish):
            await self._publish(action.old, action.view)
            return None
        if isinstance(action, Ping):
            assert self._pubsub is not None
            await self._pubsub.ping(action.token)
            return None
        assert isinstance(action, Subscribe)
        return await self._subscribe(action.channel)

    async def _subscribe(self, channel: str) -> None:
        await self._drop_pubsub()
        pubsub = self._bus.client.pubsub()
        self._pubsub = pubsub
        await pubsub.subscribe(channel)
        try:
            async with asyncio.timeout(self._bus.settings.socket_timeout):
                while True:
                    message = await pubsub.get_message(timeout=self._bus.settings.socket_timeout)
                    if message is not None and text(message["type"]) == "subscribe":
                        return
        except TimeoutError:
            raise ConnectionFailed(
                redact_url(self._bus.url), "no confirmation of SUBSCRIBE"
            ) from None

    async def _receive(self, timeout: float) -> list[Any]:
        pubsub = self._pubsub
        assert pubsub is not None
        message = await pubsub.get_message(timeout=timeout)
        if message is None:
            return []
        batch = [message]
        while len(batch) < MAX_BATCH:
            more = await pubsub.get_message(timeout=0.0)
            if more is None:
                break
            batch.append(more)
        return batch

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except Exception as exc:  # a dead connection may fail to close
                self._tracker.last_error = describe(exc)

    async def _publish(self, old: Snapshot[M] | None, view: View[M]) -> None:
        self._install(view)  # the reference readers see
        async with self._changed:
            self._changed.notify_all()
        self._queue.put_nowait((old, view.base))
        self._touch_reporter()

    # ------------------------------------------------------------ reporter task

    def _touch_reporter(self) -> None:
        self._reporter.touch()
        self._wake.set()

    async def _report(self) -> None:
        """Report to the fleet until aclose(), then send the last counts and leave."""
        await self._drive_reporter(reporting(self._reporter))
        await self._drive_reporter(farewell(self._reporter))

    async def _drive_reporter(self, phase: Generator[Idle | Write, Any, None]) -> None:
        try:
            action = next(phase)
            while True:
                if isinstance(action, Idle):
                    if self._closed:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), action.timeout)
                    self._wake.clear()
                    action = phase.send(None)
                    continue
                try:
                    result = await self._report_bus.run(action.op)
                except Exception as exc:
                    action = phase.throw(exc)
                else:
                    action = phase.send(result)
        except StopIteration:
            return
        finally:
            phase.close()

    # ------------------------------------------------------------ callbacks task

    async def _dispatch(self) -> None:
        unsaved: Snapshot[M] | None = None
        while True:
            if unsaved is not None and self._queue.empty():
                await asyncio.to_thread(self._save, unsaved)
                unsaved = None
            item = await self._queue.get()
            if item is None:
                break
            old, new = item
            if old is not None:
                for call in self._listeners(old, new):
                    try:
                        result = call()
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        self._callback_failed(old, new)
            if self.cache is not None:
                unsaved = new
        if unsaved is not None:
            await asyncio.to_thread(self._save, unsaved)
