"""Live handles, sync: a self-updating view of one namespace in a worker.

::

    live = bus.watch("chat", ChatParams)
    snap = live.current            # no lock, no I/O: one attribute read
    snap.params.temperature        # the same version for as long as snap is held

A listener thread performs the actions of :mod:`hotparams.follow` (which
holds every decision) over redis-py: it subscribes, re-reads, applies
events, reconciles, and reconnects with jittered exponential backoff
(tenacity) after any failure.  Applying a version replaces ``current``
whole; readers never wait for it.  A second thread runs change callbacks,
in version order, and writes the disk cache, so neither can slow the
listener or a reader.  A third reports the worker to the fleet and flushes
A/B exposure counts (:mod:`hotparams.reporting`), over a connection of its
own.  A handle made before ``fork()`` starts its own threads in the child
(gunicorn ``--preload``, multiprocessing), under its own worker id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import threading
import time
import weakref
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from pydantic import BaseModel
from redis.client import PubSub
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_not_exception_type,
    stop_when_event_set,
    wait_random_exponential,
)

from .bus import Bus
from .config import redact_url
from .errors import ConnectionFailed
from .follow import (
    MAX_BATCH,
    Action,
    Ping,
    Publish,
    Read,
    Receive,
    Subscribe,
    connect,
    listen,
    start,
)
from .handle import Handle, live_changed
from .protocol import text
from .redact import describe
from .reporting import Idle, Write, farewell, reporting
from .schema import ParamSchema
from .snapshot import Snapshot
from .views import View

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["Live", "close_all", "live_changed", "serve_forks"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

log = logging.getLogger("hotparams.live")

#: longest a blocking wait of the listener lasts before it checks for close()
_POLL = 0.1
#: how long close() lets the reporter send its last exposure counts and leave
_FAREWELL = 0.5


class _Stopped(Exception):
    """Internal: close() was called."""


class Live(Handle[M]):
    """The current version of one namespace, kept up to date by a listener thread.

    Read :attr:`current` as often as you like: it is a plain attribute
    holding an immutable :class:`~hotparams.Snapshot` that is replaced
    whole.  Keep the snapshot you read for the length of a request and
    every read in that request sees one version.  Made by
    :meth:`Bus.watch <hotparams.Bus.watch>`.
    """

    def __init__(
        self,
        bus: Bus,
        namespace: str,
        schema: ParamSchema[M],
        *,
        cache: str | os.PathLike[str] | None = None,
        defaults: bool = False,
        reconcile_interval: float | None = None,
        worker_name: str = "",
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            namespace,
            schema,
            cache=cache,
            reconcile_interval=reconcile_interval or bus.settings.reconcile_interval,
            settings=bus.settings,
            worker_name=worker_name,
            metrics=metrics,
            url=bus.url,
        )
        self._bus = bus
        self._init_runtime()
        first = start(self._tracker, self._keys, cached=self._cached(), defaults=defaults)
        self._drive(first)
        assert self._tracker.view is not None
        self._install(self._tracker.view)
        self._dormant = _fork_server == os.getpid()
        if self._dormant:  # gunicorn's master: only the processes it forks follow
            log.debug("%s: made in a fork server: follows in forked processes", namespace)
        elif self._tracker.origin == "redis":
            self._queue.put((None, self.current))  # save it to the cache
            self._start_threads()
            # normally subscribed and reported within milliseconds; never wait long
            deadline = time.monotonic() + bus.settings.connect_timeout
            if self.wait_until(lambda _: self._tracker.connected, bus.settings.connect_timeout):
                # listed by bus.workers() once watch() returns
                while not self._reporter.attempted and time.monotonic() < deadline:
                    time.sleep(0.001)
        else:
            self._start_threads()
        _handles.add(self)

    def _init_runtime(self) -> None:
        """Threads, locks and connections: made again after fork()."""
        self._pubsub: PubSub | None = None
        self._reader: Bus | None = None  # the listener's own connection, made when needed
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._callbacks_lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Snapshot[M] | None, Snapshot[M]] | None] = (
            queue.SimpleQueue()
        )
        self._listener: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None
        self._reporting: threading.Thread | None = None
        self._wake = threading.Event()  # the reporter: something to report
        self._report_bus: Bus | None = None  # the reporter's own connection
        self._abandon = False  # close() gave up on the reporter's last writes

    def _start_threads(self) -> None:
        self._dispatcher = threading.Thread(
            target=self._dispatch, name=f"hotparams-callbacks-{self.namespace}", daemon=True
        )
        self._listener = threading.Thread(
            target=self._listen, name=f"hotparams-live-{self.namespace}", daemon=True
        )
        self._reporting = threading.Thread(
            target=self._report, name=f"hotparams-report-{self.namespace}", daemon=True
        )
        self._dispatcher.start()
        self._listener.start()
        self._reporting.start()

    def wait_until(self, predicate: Callable[[Snapshot[M]], bool], timeout: float) -> bool:
        """Block until ``predicate(current)`` holds (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.current):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, _POLL))
        return True

    def wait_for(self, version: int, timeout: float = 10.0) -> bool:
        """Block until the served version is at least ``version``."""
        return self.wait_until(lambda snap: snap.version >= version, timeout)

    # ------------------------------------------------------------ lifecycle

    def close(self, timeout: float = 10.0) -> None:
        """Stop the threads and drop the subscription; idempotent."""
        if self._closed:
            return
        self._closed = True
        _handles.discard(self)
        self._stop(timeout)

    def _stop(self, timeout: float) -> None:
        """Stop the threads, leave the fleet and drop the connections."""
        self._stopping.set()
        self._wake.set()  # the reporter sends its last counts and leaves the fleet
        self._interrupt()  # a read blocked on a frozen or partitioned Redis returns now
        self._queue.put(None)
        me = threading.current_thread()
        for thread in (self._listener, self._dispatcher):
            if thread is not None and thread is not me and thread.is_alive():
                thread.join(timeout)
        reporting = self._reporting
        if reporting is not None and reporting is not me and reporting.is_alive():
            reporting.join(min(timeout, _FAREWELL))
            if reporting.is_alive():  # Redis does not answer: give up on leaving
                self._abandon = True
                self._interrupt_reporter()
                reporting.join(timeout)
        self._drop_pubsub()
        self._drop_reader()
        self._tracker.connected = False
        self._observer.connection(False)

    def __enter__(self) -> Live[M]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _after_fork(self) -> None:
        """In a child process: the parent's threads are gone; start ours."""
        if self._closed:
            return
        self._dormant = False
        # the parent's sockets are abandoned, never closed here: _init_runtime
        # forgets them, and redis-py makes the pool anew in this process
        self._tracker.restarted()
        self._new_worker()  # this process's own worker id and exposure counts
        self._init_runtime()
        self._start_threads()

    # ------------------------------------------------------------ listener

    def _listen(self) -> None:
        tracker, keys = self._tracker, self._keys
        s = self._bus.settings
        first = True
        while not self._stopping.is_set():
            try:
                if not first:  # many workers lose Redis at once: do not come back at once
                    self._pause(random.uniform(0, s.reconnect_base_wait))
                first = False
                self._retrying()(lambda: self._drive(connect(tracker, keys)))
                with self._changed:
                    self._changed.notify_all()
                self._touch_reporter()
                self._drive(listen(tracker, keys, time.monotonic))
            except _Stopped:
                break
            except Exception as exc:
                if self._stopping.is_set():
                    break
                tracker.connection(False, exc)
                self._touch_reporter()
            finally:
                self._drop_pubsub()
                self._drop_reader()

    def _retrying(self) -> Retrying:
        s = self._bus.settings
        return Retrying(
            wait=wait_random_exponential(
                multiplier=s.reconnect_base_wait, max=s.reconnect_max_wait
            ),
            retry=retry_if_not_exception_type(_Stopped),
            stop=stop_when_event_set(self._stopping),
            sleep=self._pause,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _before_sleep(self, state: RetryCallState) -> None:
        self._drop_pubsub()
        self._drop_reader()
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            self._tracker.connection(False, exc)
            log.debug(
                "%s: reconnect attempt %d failed: %s",
                self.namespace,
                state.attempt_number,
                describe(exc),
                extra={"namespace": self.namespace},
            )

    def _drive(self, phase: Generator[Action, Any, T]) -> T:
        """Perform a phase's actions until it returns."""
        try:
            action = next(phase)
            while True:
                if self._stopping.is_set():
                    raise _Stopped
                try:
                    result = self._perform(action)
                except _Stopped:
                    raise
                except Exception as exc:
                    action = phase.throw(exc)
                else:
                    action = phase.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            phase.close()

    def _perform(self, action: Action) -> Any:
        if isinstance(action, Receive):
            return self._receive(action.timeout)
        if isinstance(action, Read):
            return (self._bus if action.patient else self._read_bus()).run(action.op)
        if isinstance(action, Publish):
            self._publish(action.old, action.view)
            return None
        if isinstance(action, Ping):
            assert self._pubsub is not None
            self._pubsub.ping(action.token)
            return None
        assert isinstance(action, Subscribe)
        return self._subscribe(action.channel)

    def _subscribe(self, channel: str) -> None:
        self._drop_pubsub()
        pubsub = self._bus.client.pubsub()  # type: ignore[no-untyped-call]
        self._pubsub = pubsub
        pubsub.subscribe(channel)
        deadline = time.monotonic() + self._bus.settings.socket_timeout
        while True:
            message = pubsub.get_message(timeout=_POLL)
            if message is not None and text(message["type"]) == "subscribe":
                return
            if self._stopping.is_set():
                raise _Stopped
            if time.monotonic() > deadline:
                raise ConnectionFailed(redact_url(self._bus.url), "no confirmation of SUBSCRIBE")

    def _receive(self, timeout: float) -> list[Any]:
        pubsub = self._pubsub
        assert pubsub is not None
        deadline = time.monotonic() + timeout
        while True:
            wait = min(_POLL, max(0.0, deadline - time.monotonic()))
            message = pubsub.get_message(timeout=wait)
            if message is not None:
                batch = [message]
                while len(batch) < MAX_BATCH:
                    more = pubsub.get_message(timeout=0.0)
                    if more is None:
                        break
                    batch.append(more)
                return batch
            if self._stopping.is_set():
                raise _Stopped
            if time.monotonic() >= deadline:
                return []

    def _read_bus(self) -> Bus:
        """The listener's reads go through one connection of its own (from the
        Bus's pool), so that close() can interrupt a read that hangs."""
        if self._reader is None:
            self._reader = self._own_bus()
        return self._reader

    def _own_bus(self) -> Bus:
        """A Bus on one connection of its own (from the Bus's pool), one attempt per call."""
        try:
            client = redis.Redis(
                connection_pool=self._bus.client.connection_pool, single_connection_client=True
            )
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise ConnectionFailed(
                redact_url(self._bus.url), describe(exc, self._bus.url)
            ) from None
        # the listener and the reporter do their own backoff: one attempt per call
        settings = self._bus.settings.model_copy(update={"retry_attempts": 1})
        return Bus(client, settings=settings, url=self._bus.url)

    def _close_own_bus(self, bus: Bus) -> None:
        conn = bus.client.connection
        try:
            if conn is not None:
                conn.disconnect()  # type: ignore[no-untyped-call]  # half a reply: never reuse
            bus.close()
        except Exception as exc:
            log.debug("%s: closing a connection: %s", self.namespace, describe(exc))

    def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            self._close_own_bus(reader)

    def _interrupt(self) -> None:
        """Shut the listener's sockets down from another thread (close())."""
        reader, pubsub = self._reader, self._pubsub
        conns = [reader.client.connection if reader else None]
        conns.append(pubsub.connection if pubsub else None)
        for conn in conns:
            if conn is not None:
                try:
                    conn.disconnect()  # type: ignore[no-untyped-call]
                except Exception as exc:
                    log.debug("%s: interrupting: %s", self.namespace, describe(exc))

    def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception as exc:  # a dead connection may fail to close
                log.debug("%s: closing the subscription: %s", self.namespace, describe(exc))

    def _publish(self, old: Snapshot[M] | None, view: View[M]) -> None:
        self._install(view)  # the reference readers see
        with self._changed:
            self._changed.notify_all()
        self._queue.put((old, view.base))
        self._touch_reporter()

    # ------------------------------------------------------------ reporter thread

    def _touch_reporter(self) -> None:
        self._reporter.touch()
        self._wake.set()

    def _report(self) -> None:
        """Report to the fleet until close(), then send the last counts and leave."""
        with contextlib.suppress(_Stopped):
            self._drive_reporter(reporting(self._reporter))
        try:
            with contextlib.suppress(_Stopped):
                self._drive_reporter(farewell(self._reporter))
        finally:
            self._drop_report_bus()

    def _drive_reporter(self, phase: Generator[Idle | Write, Any, None]) -> None:
        try:
            action = next(phase)
            while True:
                if isinstance(action, Idle):
                    if self._stopping.is_set():
                        raise _Stopped
                    self._wake.wait(action.timeout)
                    self._wake.clear()
                    action = phase.send(None)
                    continue
                if self._abandon:
                    raise _Stopped
                try:
                    result = self._reporting_bus().run(action.op)
                except Exception as exc:
                    if self._abandon:
                        raise _Stopped from None
                    action = phase.throw(exc)
                else:
                    action = phase.send(result)
        except StopIteration:
            return
        finally:
            phase.close()

    def _reporting_bus(self) -> Bus:
        """The reporter's Bus, on a pool of its own (like the Bus's): close()
        can then cut even a connection that is still being opened."""
        if self._report_bus is None:
            base = self._bus.client.connection_pool
            pool = redis.ConnectionPool(
                connection_class=base.connection_class, **base.connection_kwargs
            )
            settings = self._bus.settings.model_copy(update={"retry_attempts": 1})
            self._report_bus = Bus(
                redis.Redis(connection_pool=pool), settings=settings, url=self._bus.url
            )
        return self._report_bus

    def _interrupt_reporter(self) -> None:
        bus = self._report_bus
        if bus is None:
            return
        pool = bus.client.connection_pool
        # the Bus retries a failed call once, on a new connection: that one
        # must not wait for the unresponsive server for a socket timeout again
        pool.connection_kwargs.update(socket_timeout=0.01, socket_connect_timeout=0.01)
        try:
            pool.disconnect(inuse_connections=True)
            pool.reset()
        except Exception as exc:
            log.debug("%s: interrupting the reporter: %s", self.namespace, describe(exc))

    def _drop_report_bus(self) -> None:
        bus, self._report_bus = self._report_bus, None
        if bus is not None:
            try:
                bus.close()
                bus.client.connection_pool.disconnect()
            except Exception as exc:
                log.debug("%s: closing the report connection: %s", self.namespace, describe(exc))

    # ------------------------------------------------------------ callbacks thread

    def _dispatch(self) -> None:
        unsaved: Snapshot[M] | None = None
        while True:
            try:
                item = self._queue.get() if unsaved is None else self._queue.get(timeout=0)
            except queue.Empty:
                self._save(unsaved)
                unsaved = None
                continue
            if item is None:
                break
            old, new = item
            if old is not None:
                self._notify(old, new)
            if self.cache is not None:
                unsaved = new
        if unsaved is not None:
            self._save(unsaved)

    def _notify(self, old: Snapshot[M], new: Snapshot[M]) -> None:
        for call in self._listeners(old, new):
            try:
                call()
            except Exception:
                self._callback_failed(old, new)


# ---------------------------------------------------------------- fork safety

_handles: weakref.WeakSet[Live[Any]] = weakref.WeakSet()


#: the pid of the process declared a fork server (:func:`serve_forks`), if any
_fork_server: int | None = None


def serve_forks(timeout: float = 10.0) -> None:
    """Declare this process a fork server: gunicorn's master with
    ``--preload`` (see :mod:`hotparams.gunicorn`), which makes the app, then
    forks the workers and serves no request itself.

    A live handle made in it reads its first snapshot (so a bad URL or
    namespace fails at start) but never follows, reports to the fleet or
    keeps a connection: it is no worker.  A handle already running stops
    and leaves the fleet.  Each process forked from it runs its handles in
    full, under its own worker id.
    """
    global _fork_server
    _fork_server = os.getpid()
    for handle in list(_handles):
        if not handle._closed and not handle._dormant:
            handle._dormant = True
            handle._stop(timeout)


def close_all(timeout: float = 10.0) -> None:
    """Close every live handle of this process; each leaves the fleet at
    once (gunicorn's ``worker_exit``: ``set --wait`` right after a restart
    waits for no dead worker)."""
    for handle in list(_handles):
        handle.close(timeout)


def _after_fork_in_child() -> None:
    for handle in list(_handles):
        handle._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
