"""The shared subscription of a process, per Redis node: its two drivers.

:mod:`hotparams.hub` decides who hears what; here one pub/sub connection
is opened, read and closed: by the handles' own listener threads in turn
(:class:`Hub`, for :class:`~hotparams.Live`: one of them reads at a time
and hands the others their messages, so a process with one handle reads
its socket itself) or by a task (:class:`AsyncHub`, for
:class:`~hotparams.aio.AsyncLive`).  A handle joins with an inbox of its
own per subscription, reads its inbox instead of a socket, and leaves when
it resets or closes; the connection opens with the first handle and closes
with the last.  When the connection fails, every inbox on it receives
:class:`~hotparams.hub.Down` and every handle reconnects (and re-reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .config import redact_url
from .driving import Stopped
from .errors import ConnectionFailed
from .follow import MAX_BATCH
from .hub import Down, Inbox, Routes
from .protocol import text
from .redact import describe

if TYPE_CHECKING:
    import redis.asyncio as aredis
    from redis.asyncio.client import PubSub as AsyncPubSub
    from redis.client import PubSub

__all__ = ["AsyncHub", "Hub", "down_error", "messages_of"]

log = logging.getLogger("hotparams.live")

T = TypeVar("T")

#: longest a blocking read of the sync reader lasts before it checks it still runs
_POLL = 0.1
#: longest the handle reading the shared connection blocks in one read: its
#: close() (which cannot cut a socket the others share) waits at most this
_READ_SLICE = 0.02
#: a shared read started this recently serves a handle that asks for it now
#: (the handles of a process wake for their probes milliseconds apart)
SHARED_FRESH = 0.05


def _fresh(started: float, since: float) -> bool:
    """Whether a shared read that started at ``started`` serves a handle
    that needs one started at ``since`` or later (its probe's tick), or
    moments ago."""
    return started >= since > 0 or time.monotonic() - started < SHARED_FRESH


def down_error(url: str, down: Down) -> ConnectionFailed:
    """What a handle raises when its shared connection failed."""
    return ConnectionFailed(redact_url(url), describe(down.error, url))


def messages_of(url: str, item: Any) -> list[Any]:
    """The messages of one inbox item; a :class:`~hotparams.hub.Down` raises."""
    if isinstance(item, Down):
        raise down_error(url, item)
    return list(item)


def _confirmed(batch: Any, channel: str) -> bool:
    """Whether a batch of messages holds the confirmation of ``channel``."""
    return any(
        text(m.get("type", "")) == "ssubscribe" and text(m.get("channel") or "") == channel
        for m in batch
    )


def _next_message(pubsub: PubSub, timeout: float) -> Any:
    """The next message of ``pubsub`` if one begins to arrive within
    ``timeout``, else None.  Its rest is read with the connection's socket
    timeout: redis-py 8's ``get_message(timeout)`` reads it with the poll's,
    so a message split across TCP segments on a busy machine timed out, and
    redis-py then reconnected under us, dropping what was in flight (a burst
    of a thousand events broke the subscription)."""
    conn = pubsub.connection
    if conn is None or not conn.can_read(timeout=timeout):
        return None
    return pubsub.handle_message(conn.read_response(disconnect_on_error=False, push_request=True))


async def _anext_message(pubsub: AsyncPubSub) -> Any:
    """As :func:`_next_message` without waiting, for the asyncio reader's
    burst: a message already begun is read whole, within the socket timeout
    (redis.asyncio's ``get_message(timeout=0.0)`` passes the poll's timeout
    to the read of its rest too)."""
    conn = pubsub.connection
    # can_read in redis-py 8; can_read_destructive (deprecated there) before
    pending = getattr(conn, "can_read", None) or getattr(conn, "can_read_destructive", None)
    if conn is None or pending is None or not await pending():
        return None
    return await pubsub.handle_message(
        await conn.read_response(disconnect_on_error=False, push_request=True)
    )


class _Flight:
    """A read in flight that several handles wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Hub:
    """One node's shared subscription for the sync handles of a process."""

    def __init__(self, opener: Callable[[str], PubSub], url: str, timeout: float) -> None:
        #: makes the pub/sub of the node serving a channel (clients.shard_pubsub)
        self._opener = opener
        self._url = url
        self._timeout = timeout
        self.routes = Routes()
        self._lock = threading.Lock()  # the connection's life: open, send, close
        self._pubsub: PubSub | None = None
        self._reading = threading.Lock()  # held by the handle that reads the connection
        self._turn = threading.Condition()  # a delivery came, or the reader is done
        self._flights: dict[str, _Flight] = {}
        self._recent: dict[str, tuple[float, Any]] = {}  # shared reads just done

    def join(self, channel: str, inbox: Inbox, stopping: threading.Event) -> None:
        """Follow ``channel`` into ``inbox`` once Redis confirmed the subscription."""
        with self._lock:
            how = self.routes.join(channel, inbox)
            if how == "send":
                try:
                    if self._pubsub is None:
                        self._open(channel)
                    else:
                        self._pubsub.ssubscribe(channel)
                except Exception as exc:
                    self._break(exc)
                    raise
        if how == "ready":
            return
        deadline = time.monotonic() + self._timeout
        while True:
            item = self.receive(inbox, max(0.0, deadline - time.monotonic()), stopping)
            if isinstance(item, Down):
                raise down_error(self._url, item)
            if item is not None and _confirmed(item, channel):
                return
            if time.monotonic() >= deadline:
                raise ConnectionFailed(redact_url(self._url), "no confirmation of SSUBSCRIBE")

    def receive(self, inbox: Any, timeout: float, stopping: threading.Event) -> Any:
        """The next item of ``inbox`` within ``timeout`` (None if none came).

        No thread of its own reads the connection: the handle that waits
        reads it when no other one does (one reader at a time), and hands
        each message to the inboxes of its channel.  A process with one
        handle thus reads its socket directly, as if it were its own."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return inbox.get_nowait()
            except queue.Empty:
                pass
            left = max(0.0, deadline - time.monotonic())
            if self._reading.acquire(blocking=False):
                try:
                    self._read_once(min(_READ_SLICE, left))
                finally:
                    with self._turn:
                        self._reading.release()
                        self._turn.notify_all()  # a waiting handle may read now
            else:
                with self._turn:  # woken by a delivery, or when the reader is done
                    if inbox.empty() and self._reading.locked():
                        self._turn.wait(min(_POLL, left))
            if time.monotonic() >= deadline:
                try:
                    return inbox.get_nowait()
                except queue.Empty:
                    return None
            if stopping.is_set():
                raise Stopped

    def wake(self) -> None:
        """Wake the handles waiting for their turn (one of them closes)."""
        with self._turn:
            self._turn.notify_all()

    def _read_once(self, timeout: float) -> None:
        """Read a burst from the connection and deliver it."""
        pubsub = self._pubsub
        if pubsub is None:  # closed or broken: the inboxes were told
            time.sleep(min(timeout, _POLL / 10))
            return
        try:
            message = _next_message(pubsub, timeout)
            if message is None:
                return
            batch = [message]
            while len(batch) < MAX_BATCH and (more := _next_message(pubsub, 0.0)):
                batch.append(more)
        except Exception as exc:
            if self._pubsub is not pubsub:  # closed under us (a leave or a break)
                return
            with self._lock:
                if self._pubsub is pubsub:
                    self._break(exc)
            return
        deliveries = self.routes.route(batch, time.monotonic())
        with self._turn:
            for inbox, messages in deliveries:
                inbox.put_nowait(messages)
            self._turn.notify_all()

    def leave(self, channel: str, inbox: Inbox, *, dead: bool = False) -> None:
        """Stop following; with ``dead``, the handle judged the connection
        dead (no pong): every handle on it reconnects."""
        with self._lock:
            if dead and self.routes.holds(inbox):
                self._break(ConnectionFailed(redact_url(self._url), "no answer to a PING"))
                return
            if not self.routes.leave(channel, inbox):
                return
            if self.routes.empty():
                self._close()
                return
            try:
                if self._pubsub is not None:
                    self._pubsub.sunsubscribe(channel)  # type: ignore[no-untyped-call]
            except Exception as exc:
                self._break(exc)

    def shared(
        self, name: str, read: Callable[[], T], stopping: threading.Event, since: float = 0.0
    ) -> T:
        """The result of ``read``, or of the same read (``name``) another
        handle of the process has in flight: a probe's head is read once
        per process and namespace, however many handles probe it."""
        recent = self._recent.get(name)
        if recent is not None and _fresh(recent[0], since):
            return cast(T, recent[1])
        with self._lock:
            flight = self._flights.get(name)
            leader = flight is None
            if flight is None:
                flight = self._flights[name] = _Flight()
        if leader:
            try:
                started = time.monotonic()
                flight.result = read()
                self._recent[name] = (started, flight.result)
            except BaseException as exc:
                flight.error = exc
            finally:
                with self._lock:
                    del self._flights[name]
                flight.done.set()
        else:
            while not flight.done.wait(_POLL):
                if stopping.is_set():
                    raise Stopped
        if flight.error is not None:
            if isinstance(flight.error, Stopped) and not leader:  # its handle closed, not ours
                raise ConnectionFailed(redact_url(self._url), "a shared read was cut short")
            raise flight.error
        return cast(T, flight.result)

    def ping(self, since: float = 0.0) -> str | None:
        """The token of the pong that answers for the connection now (None:
        one just did, or since ``since``)."""
        token, send = self.routes.ping(time.monotonic(), since)
        with self._lock:
            if self._pubsub is None:
                raise ConnectionFailed(redact_url(self._url), "the subscription is closed")
            if send:
                assert token is not None
                try:
                    self._pubsub.ping(token)
                except Exception as exc:
                    self._break(exc)
                    raise
        return token

    # ------------------------------------------------------------ the connection

    def _open(self, channel: str) -> None:
        """Connect with the first channel."""
        pubsub = self._opener(channel)
        self._pubsub = pubsub
        pubsub.ssubscribe(channel)

    def _break(self, exc: BaseException) -> None:
        """(Lock held.)  The connection failed: close it, tell every handle."""
        log.debug("the shared subscription failed: %s", describe(exc, self._url))
        self._close()
        with self._turn:
            for inbox in self.routes.clear():
                inbox.put_nowait(Down(exc))
            self._turn.notify_all()

    def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception as exc:  # a dead connection may fail to close
                log.debug("closing the shared subscription: %s", describe(exc))


class AsyncHub:
    """One node's shared subscription for the asyncio handles of a process (one loop)."""

    def __init__(self, opener: Callable[[str], Any], url: str, timeout: float) -> None:
        #: makes the pub/sub of the node serving a channel, and a client to
        #: close after it or None (clients.async_shard_pubsub)
        self._opener = opener
        self._url = url
        self._timeout = timeout
        self.routes = Routes()
        self._pubsub: AsyncPubSub | None = None
        self._own: aredis.Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._flights: dict[str, asyncio.Future[Any]] = {}
        self._recent: dict[str, tuple[float, Any]] = {}  # shared reads just done

    async def join(self, channel: str, inbox: asyncio.Queue[Any]) -> None:
        async with self._lock:
            how = self.routes.join(channel, inbox)
            if how == "send":
                try:
                    if self._pubsub is None:
                        await self._open(channel)
                    else:
                        await self._pubsub.ssubscribe(channel)
                except Exception as exc:
                    await self._break(exc)
                    raise
        if how == "ready":
            return
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    item = await inbox.get()
                    if isinstance(item, Down):
                        raise down_error(self._url, item)
                    if _confirmed(item, channel):
                        return
        except TimeoutError:
            raise ConnectionFailed(redact_url(self._url), "no confirmation of SSUBSCRIBE") from None

    async def leave(self, channel: str, inbox: asyncio.Queue[Any], *, dead: bool = False) -> None:
        async with self._lock:
            if dead and self.routes.holds(inbox):
                await self._break(ConnectionFailed(redact_url(self._url), "no answer to a PING"))
                return
            if not self.routes.leave(channel, inbox):  # not joined (after a break)
                if self.routes.empty() and self._pubsub is None:
                    await self._close(cut_reads=True)  # nobody left to await a read
                return
            if self.routes.empty():
                await self._close(cut_reads=True)
                return
            try:
                if self._pubsub is not None:
                    await self._pubsub.sunsubscribe(channel)
            except Exception as exc:
                await self._break(exc)

    async def shared(self, name: str, read: Callable[[], Awaitable[T]], since: float = 0.0) -> T:
        """As :meth:`Hub.shared`: the read runs as a task of its own, so a
        handle that closes (its task cancelled) does not cut it for the others."""
        recent = self._recent.get(name)
        if recent is not None and _fresh(recent[0], since):
            return cast(T, recent[1])
        task = self._flights.get(name)
        if task is None:
            task = asyncio.ensure_future(read())
            self._flights[name] = task
            task.add_done_callback(functools.partial(self._landed, name, time.monotonic()))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and (me is None or not me.cancelling()):
                # the read was cut under us (the last handle left): not our cancellation
                raise ConnectionFailed(redact_url(self._url), "the shared read was cut") from None
            raise

    def _landed(self, name: str, started: float, task: asyncio.Future[Any]) -> None:
        self._flights.pop(name, None)
        if not task.cancelled() and task.exception() is None:  # (retrieved: waiters may be gone)
            self._recent[name] = (started, task.result())

    async def ping(self, since: float = 0.0) -> str | None:
        token, send = self.routes.ping(time.monotonic(), since)
        if not send:  # shared: no wait for the lock of a send in progress
            if self._pubsub is None:
                raise ConnectionFailed(redact_url(self._url), "the subscription is closed")
            return token
        async with self._lock:
            if self._pubsub is None:
                raise ConnectionFailed(redact_url(self._url), "the subscription is closed")
            assert token is not None
            try:
                await self._pubsub.ping(token)
            except Exception as exc:
                await self._break(exc)
                raise
        return token

    async def _open(self, channel: str) -> None:
        """Connect with the first channel, then start the reader."""
        self._pubsub, self._own = await self._opener(channel)
        await self._pubsub.ssubscribe(channel)
        self._reader = asyncio.create_task(self._read(self._pubsub), name="hotparams-hub")

    async def _read(self, pubsub: AsyncPubSub) -> None:
        try:
            while self._pubsub is pubsub:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                batch = [message]
                while len(batch) < MAX_BATCH and (more := await _anext_message(pubsub)):
                    batch.append(more)
                for inbox, messages in self.routes.route(batch, time.monotonic()):
                    inbox.put_nowait(messages)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._pubsub is not pubsub:  # closed under us
                return
            async with self._lock:
                if self._pubsub is pubsub:
                    await self._break(exc)

    async def _break(self, exc: BaseException) -> None:
        log.debug("the shared subscription failed: %s", describe(exc, self._url))
        await self._close()
        for inbox in self.routes.clear():
            inbox.put_nowait(Down(exc))

    async def _close(self, *, cut_reads: bool = False) -> None:
        """Drop the connection; with ``cut_reads`` (the last handle left)
        also the shared reads in flight: nobody waits for them, and they must
        not outlive the handles (cancelled, their connections are dropped,
        not left to the loop's end).  A broken connection does not cut them:
        they run on the bus's connections, and handles still await them."""
        pubsub, self._pubsub = self._pubsub, None
        own, self._own = self._own, None
        reader, self._reader = self._reader, None
        if cut_reads:
            flights, self._flights = list(self._flights.values()), {}
            for flight in flights:
                flight.cancel()
            for flight in flights:
                with contextlib.suppress(BaseException):
                    await flight
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if pubsub is not None:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except Exception as exc:
                log.debug("closing the shared subscription: %s", describe(exc))
        if own is not None:  # the client of a cluster node the pub/sub was made on
            try:
                await own.aclose()
            except Exception as exc:
                log.debug("closing the shard's client: %s", describe(exc))
