"""Live handles, sync: a self-updating view of one namespace in a worker.

::

    live = bus.watch("chat", ChatParams)
    snap = live.current            # no lock, no I/O: one attribute read
    snap.params.temperature        # the same version for as long as snap is held

The handle runs the conversations of :mod:`hotparams.runner` (the
listener and the dispatcher, each written once for both handles) on two
threads, performing their actions with blocking calls over redis-py; the
process's handles share one subscription per Redis node (a reader thread,
:class:`hotparams.subscription.Hub`) and one report pump per bus (a
thread, over a connection of its own).  Applying a version replaces
``current`` whole; readers never wait for it.  Callbacks and the disk
cache run on the dispatcher's thread, fleet reports on the pump's, so
neither can slow the listener or a reader.  ``close()`` cuts a call that
hangs on a frozen or partitioned Redis by shutting its socket down.  A
handle made before ``fork()`` starts its own threads in the child
(gunicorn ``--preload``, multiprocessing), under its own worker id.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import redis
from pydantic import BaseModel
from redis.cluster import RedisCluster

from . import follow as listener
from . import reporting as reporter
from . import runner
from .bus import Bus
from .clients import interrupt, own_client, refresh_slots, shard_name, shard_pubsub
from .config import redact_url
from .core import WatchOptions
from .driving import Stopped, converse
from .errors import ConnectionFailed
from .handle import Handle, live_changed
from .redact import describe
from .schema import ParamSchema
from .snapshot import Snapshot
from .subscription import Hub, messages_of

if TYPE_CHECKING:
    pass

__all__ = ["Live", "close_all", "live_changed", "serve_forks"]

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("hotparams.live")

#: guards the per-process registries of a bus (shared subscriptions, report pump)
_hubs_lock = threading.Lock()

#: longest a blocking wait of the listener lasts before it checks for close()
_POLL = 0.1
#: how long close() lets the reporter send its last exposure counts and leave
_FAREWELL = 0.5


class Live(Handle[M]):
    """The current version of one namespace, kept up to date by a listener thread.

    Read :attr:`current` as often as you like: it is a plain attribute
    holding an immutable :class:`~hotparams.Snapshot` that is replaced
    whole.  Keep the snapshot you read for the length of a request and
    every read in that request sees one version.  Made by
    :meth:`Bus.watch <hotparams.Bus.watch>`.
    """

    def __init__(
        self, bus: Bus, namespace: str, schema: ParamSchema[M], **options: Unpack[WatchOptions]
    ) -> None:
        super().__init__(namespace, schema, settings=bus.settings, url=bus.url, **options)
        self._bus = bus
        #: where the listener subscribes and reads: the bus, or a replica's (follow_replicas)
        self._follow = bus._following()
        self._init_runtime()
        first = listener.start(
            self._tracker, self._keys, cached=self._cached(), defaults=self._defaults
        )
        converse(first, self._listener_act)
        assert self._tracker.view is not None
        self._install(self._tracker.view)
        self._dormant = _fork_server == os.getpid()
        if self._dormant:  # gunicorn's master: only the processes it forks follow
            log.debug("%s: made in a fork server: follows in forked processes", namespace)
        elif self._tracker.origin == "redis":
            self._queue.put((None, self.current))  # save it to the cache
            self._start_threads()
            self._until_joined(bus.settings.connect_timeout)
        else:
            self._start_threads()
        _handles.add(self)

    def _init_runtime(self) -> None:
        """Threads, locks and connections: made again after fork()."""
        #: the shared subscription this handle joined: (hub, channel, inbox)
        self._joined: tuple[Hub, str, queue.SimpleQueue[Any]] | None = None
        self._reader: Bus | None = None  # the listener's own connection, made when needed
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._queue: queue.SimpleQueue[tuple[Snapshot[M] | None, Snapshot[M]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._reported = threading.Event()  # the reporter's first call is done
        #: the report pump of this process's handles on the bus, once joined
        self._reports: _Reports | None = None
        self._act = functools.partial(runner.perform, self)

    def _start_threads(self) -> None:
        for role, target in (
            ("callbacks", self._dispatch),
            ("live", self._listen),
        ):
            thread = threading.Thread(
                target=target, name=f"hotparams-{role}-{self.namespace}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self._reports = _reports(self._bus)
        self._reports.join(self._reporter, self._reported.set)

    def _until_joined(self, wait: float) -> None:
        """Normally subscribed and reported within milliseconds (then
        ``bus.workers()`` lists the handle); never wait long for it."""
        deadline = time.monotonic() + wait
        if self.wait_until(lambda _: self._tracker.connected, wait):
            self._reported.wait(max(0.0, deadline - time.monotonic()))

    def wait_until(self, predicate: Callable[[Snapshot[M]], bool], timeout: float) -> bool:
        """Block until ``predicate(current)`` holds (True) or ``timeout`` passes (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.current), timeout)

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
        self._interrupt()  # a read blocked on a frozen or partitioned Redis returns now
        self._queue.put(None)
        me = threading.current_thread()
        dispatcher, listener = self._threads or (None, None)
        for thread in (listener, dispatcher):
            if thread is not None and thread is not me and thread.is_alive():
                thread.join(timeout)
        reports, self._reports = self._reports, None
        if reports is not None:  # the last counts, then leave the fleet
            reports.leave(self._reporter, min(timeout, _FAREWELL))
        self._leave()
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

    # ------------------------------------------------------------ the two threads

    def _listen(self) -> None:
        try:
            s = self._bus.settings
            converse(
                listener.follow(self._tracker, self._keys, s, time.monotonic), self._listener_act
            )
        except Stopped:
            pass
        finally:
            self._leave()
            self._drop_reader()

    def _dispatch(self) -> None:
        converse(runner.dispatching(self), self._act)

    def _listener_act(self, action: listener.Action) -> Any:
        """The listener's actions stop once close() was called, and a call
        that close() cut short ends the listener rather than failing."""
        if self._stopping.is_set():
            raise Stopped
        try:
            return runner.perform(self, action)
        except Exception:
            if self._stopping.is_set():
                raise Stopped from None
            raise

    # ------------------------------------------------------------ listener actions

    def _subscribe(self, action: listener.Subscribe) -> None:
        self._leave()
        client = self._follow.client
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        try:
            hub = _hub(self._follow, action.channel)
            hub.join(action.channel, inbox, self._stopping)
        except redis.ResponseError as exc:  # MOVED: the slot has another owner now
            refresh_slots(client)
            raise ConnectionFailed(redact_url(self._bus.url), f"SSUBSCRIBE: {exc}") from None
        except (redis.ConnectionError, redis.TimeoutError, ConnectionFailed):
            refresh_slots(client)  # the node died: who serves it now?
            raise
        self._joined = (hub, action.channel, inbox)

    def _receive(self, action: listener.Receive) -> list[Any]:
        assert self._joined is not None
        hub, _, inbox = self._joined
        item = hub.receive(inbox, action.timeout, self._stopping)
        if item is None:
            return []
        batch = messages_of(self._bus.url, item)
        while len(batch) < listener.MAX_BATCH:  # and whatever else came meanwhile
            try:
                batch += messages_of(self._bus.url, inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def _ping(self, action: listener.Ping) -> str | None:
        assert self._joined is not None
        return self._joined[0].ping(action.since)

    def _read(self, action: listener.Read) -> Any:
        bus = self._follow if action.patient else self._read_bus()
        joined = self._joined
        if action.shared is not None and joined is not None:
            run = functools.partial(bus.run, action.op)
            return joined[0].shared(action.shared, run, self._stopping, action.since)
        return bus.run(action.op)

    def _publish(self, action: listener.Publish) -> None:
        self._install(action.view)  # the reference readers see
        with self._changed:
            self._changed.notify_all()
        if self._dispatching():
            self._queue.put((action.old, action.view.base))
        self._touch_reporter()

    def _pause(self, action: listener.Pause) -> None:
        if self._stopping.wait(action.seconds):
            raise Stopped

    def _reset(self, action: listener.Reset) -> None:
        self._leave(dead=action.dead)
        self._drop_reader()

    def _signal(self, action: listener.Status) -> None:
        with self._changed:
            self._changed.notify_all()
        self._touch_reporter()

    # ------------------------------------------------------------ reporter actions

    def _touch_reporter(self) -> None:
        if self._reporter.touch() and self._reports is not None:
            self._reports.wake(change=True)

    # ------------------------------------------------------------ dispatcher actions

    def _take(self, action: runner.Take) -> Any:
        try:
            return self._queue.get(block=action.block)
        except queue.Empty:
            return runner.EMPTY

    def _store(self, action: runner.Store) -> None:
        self._save(action.snap)

    def _notify(self, action: runner.Notify) -> None:
        action.call()

    # ------------------------------------------------------------ connections

    def _read_bus(self) -> Bus:
        """The listener's reads go through one connection of its own (from the
        Bus's pool), so that close() can interrupt a read that hangs."""
        if self._reader is None:
            self._reader = self._own_bus()
        return self._reader

    def _own_bus(self) -> Bus:
        """A Bus on one connection of its own (from the Bus's pool), one attempt per call."""
        try:
            client = own_client(self._follow.client, single_connection=True)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise ConnectionFailed(
                redact_url(self._bus.url), describe(exc, self._bus.url)
            ) from None
        # the listener and the reporter do their own backoff: one attempt per call
        settings = self._follow.settings.model_copy(update={"retry_attempts": 1})
        return Bus(client, settings=settings, url=self._bus.url)

    def _close_own_bus(self, bus: Bus) -> None:
        try:
            interrupt(bus.client)  # half a reply: never reuse
            bus.close()
        except Exception as exc:
            log.debug("%s: closing a connection: %s", self.namespace, describe(exc))

    def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            self._close_own_bus(reader)

    def _interrupt(self) -> None:
        """Shut the listener's read down from another thread (close()), and
        wake its wait on the shared subscription."""
        joined = self._joined
        if joined is not None:
            joined[0].wake()
        reader = self._reader
        if reader is not None:
            try:
                interrupt(reader.client)
            except Exception as exc:
                log.debug("%s: interrupting: %s", self.namespace, describe(exc))

    def _leave(self, *, dead: bool = False) -> None:
        """Leave the shared subscription (see hotparams.subscription)."""
        joined, self._joined = self._joined, None
        if joined is not None:
            hub, channel, inbox = joined
            hub.leave(channel, inbox, dead=dead)


# ---------------------------------------------------------------- fleet reports


class _Reports:
    """The fleet reports of this process's handles on one bus: one thread
    runs :func:`hotparams.reporting.pumping` for all of them (one
    ``hp_reports`` call per namespace), over a connection of its own."""

    def __init__(self, bus: Bus) -> None:
        self.pump = reporter.Pump()
        self._bus = bus
        self._wake = threading.Event()
        #: when the pump's sleep ends (inf while it works: a change wakes it)
        self._asleep_until = math.inf
        self._writer: Bus | None = None
        self._thread: threading.Thread | None = None

    def join(self, r: reporter.Reporter, tried: Callable[[], None]) -> None:
        if self.pump.join(r, tried):
            self._start()
        self.wake()

    def leave(self, r: reporter.Reporter, wait: float) -> None:
        """Send ``r``'s last counts and leave the fleet: waits at most
        ``wait`` seconds (a Redis that does not answer is not waited for)."""
        done = threading.Event()
        if self.pump.leave(r, done.set):
            self._start()
        self.wake()
        thread = self._thread
        if not done.wait(wait):
            log.debug("%s: leaving the fleet takes too long: not waited for", r.namespace)
            if self.pump.members() or thread is None:
                return
            self._interrupt()  # nobody else reports: cut it short
        if thread is not None and not self.pump.members():
            thread.join(wait)  # the last one left: the thread ends now

    def _interrupt(self) -> None:
        """Cut the pump's call to a Redis that does not answer."""
        writer = self._writer
        if writer is None:
            return
        if isinstance(writer.client, RedisCluster):
            interrupt(writer.client)
            return
        pool = writer.client.connection_pool
        # a call retried on a new connection must not wait for the
        # unresponsive server for a socket timeout again
        pool.connection_kwargs.update(socket_timeout=0.01, socket_connect_timeout=0.01)
        try:
            pool.disconnect(inuse_connections=True)
            pool.reset()
        except Exception as exc:
            log.debug("interrupting the reporter: %s", describe(exc))

    def wake(self, *, change: bool = False) -> None:
        """Wake the pump; for a ``change``, only if it sleeps past the
        change's report (reporting.wakes)."""
        if change and not reporter.wakes(self._asleep_until, time.monotonic()):
            return
        if not self._wake.is_set():
            self._wake.set()

    def _start(self) -> None:
        # one attempt per call: the pump does its own backoff
        settings = self._bus.settings.model_copy(update={"retry_attempts": 1})
        writer = Bus(own_client(self._bus.client), settings=settings, url=self._bus.url)
        self._writer = writer
        self._thread = threading.Thread(
            target=self._run, args=(writer,), name="hotparams-report", daemon=True
        )
        self._thread.start()

    def _run(self, writer: Bus) -> None:
        try:
            converse(reporter.pumping(self.pump), functools.partial(_pump_act, self, writer))
        finally:
            try:
                writer.close()
                interrupt(writer.client)
            except Exception as exc:
                log.debug("closing the report connection: %s", describe(exc))

    def _idle(self, action: reporter.Idle) -> None:
        self._asleep_until = time.monotonic() + action.timeout
        try:
            self._wake.wait(action.timeout)
        finally:
            self._asleep_until = math.inf  # awake: a change wakes it (it may sleep next)
        self._wake.clear()


def _pump_act(reports: _Reports, writer: Bus, action: reporter.Action) -> Any:
    if isinstance(action, reporter.Write):
        return writer.run(action.op)
    return reports._idle(action)


def _reports(bus: Bus) -> _Reports:
    """The report pump of this process's handles on ``bus``."""
    with _hubs_lock:
        pid = os.getpid()
        pump: tuple[int, _Reports] | None = bus._pump
        if pump is None or pump[0] != pid:
            pump = (pid, _Reports(bus))
            bus._pump = pump
        return pump[1]


# ---------------------------------------------------------------- shared subscriptions


def _hub(bus: Bus, channel: str) -> Hub:
    """The shared subscription of this process to the node serving ``channel``."""
    key = (os.getpid(), shard_name(bus.client, channel))
    with _hubs_lock:
        hub: Hub | None = bus._hubs.get(key)
        if hub is None:
            client = bus.client
            hub = Hub(lambda ch: shard_pubsub(client, ch), bus.url, bus.settings.socket_timeout)
            bus._hubs[key] = hub
        return hub


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
