"""The listener of a live handle as a conversation, free of I/O.

Like the operations of :mod:`hotparams.protocol`, each phase is a
generator: it yields the actions it needs and receives their results (or
has their errors thrown in).  The sync handle (:mod:`hotparams.live`) and
the asyncio one (:mod:`hotparams.aio`) only perform the actions, so the
listener's logic exists once:

``start``   the first read, with the disk cache or the defaults as fallbacks
``connect`` subscribe, then re-read: from here on no change can be missed
``listen``  apply events, re-read on a gap or a re-subscribe, and every
            ``reconcile_interval`` ping the subscription and compare the
            stored version (a frozen or partitioned server sends nothing,
            so only a probe reveals it); returns never: it ends when an
            action fails, or with :class:`Lost` when the subscription is
            silent
``follow``  the listener's whole life: connect and listen, and after any
            failure record it, drop the connections, wait (the backoff of
            :mod:`hotparams.backoff`) and connect again, until the handle
            closes (the driver stops performing: a thread's ``Stopped``, a
            task's cancellation)

Actions and their results:

=============== ==========================================================
``Subscribe``   a fresh subscription to the channel (SSUBSCRIBE, sharded
                pub/sub: on a cluster, at the node serving its slot), once
                Redis confirmed it
``Receive``     the messages that arrive within ``timeout`` (a burst is
                drained whole, up to ``MAX_BATCH``); ``[]`` on timeout
``Ping``        a PING on the subscription: the token of the pong to wait
                for, None if a pong just came (the connection is shared by
                the process's handles, and so are its PINGs, see
                :mod:`hotparams.hub`)
``Read``        the result of a :mod:`~hotparams.protocol` operation (with
                ``shared``, perhaps of the same read by another handle)
``Publish``     make ``view`` (``new`` and its variants) the handle's current
                snapshot, then notify
``Pause``       wait ``seconds`` (cut short when the handle closes)
``Reset``       drop the subscription and the listener's connection;
                with ``dead``, the shared connection itself did not answer
``Status``      the connection came or went: wake whoever waits for it
=============== ==========================================================

Each action names the method of the driver that performs it (``verb``):
the sync :class:`~hotparams.Live` and the asyncio
:class:`~hotparams.aio.AsyncLive` implement the same methods, one
blocking, one awaited (see :class:`hotparams.runner.Backend`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .backoff import jittered
from .config import Settings
from .errors import ConnectionFailed, NamespaceDamaged, NamespaceNotFound, ProtocolError
from .events import Event, parse_event
from .hub import next_tick
from .keys import Keys
from .protocol import Op, get_op, head_op, text
from .snapshot import Snapshot
from .tracker import Tracker
from .views import View

__all__ = [
    "MAX_BATCH",
    "Action",
    "Lost",
    "Pause",
    "Ping",
    "Publish",
    "Read",
    "Receive",
    "Reset",
    "Status",
    "Subscribe",
    "Unanswered",
    "connect",
    "follow",
    "listen",
    "start",
]

log = logging.getLogger("hotparams.live")

#: most messages handled as one batch (a burst beyond is handled in several)
MAX_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Subscribe:
    verb: ClassVar[str] = "_subscribe"
    channel: str


@dataclass(frozen=True, slots=True)
class Receive:
    verb: ClassVar[str] = "_receive"
    timeout: float


@dataclass(frozen=True, slots=True)
class Ping:
    verb: ClassVar[str] = "_ping"
    #: the probe's tick: a pong that came since answers it
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class Read:
    verb: ClassVar[str] = "_read"
    op: Op[Any]
    #: retry like any Bus call (the first read, without a fallback)
    patient: bool = False
    #: a name for the read: the same read of another handle of this process
    #: in flight serves this one too (a probe's head; never a re-read,
    #: which must start after this handle subscribed)
    shared: str | None = None
    #: with ``shared``: a read started since then serves (the probe's tick)
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class Publish:
    verb: ClassVar[str] = "_publish"
    old: Snapshot[Any] | None
    #: the new snapshot with its merged variants: swapped as one reference
    view: View[Any]


@dataclass(frozen=True, slots=True)
class Pause:
    verb: ClassVar[str] = "_pause"
    seconds: float


@dataclass(frozen=True, slots=True)
class Reset:
    verb: ClassVar[str] = "_reset"
    #: the subscription's connection did not answer a PING: every handle on it reconnects
    dead: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    verb: ClassVar[str] = "_signal"


Action = Subscribe | Receive | Ping | Read | Publish | Pause | Reset | Status
Phase = Generator[Action, Any, None]


class Lost(Exception):
    """The subscription is judged dead although no call failed."""


class Unanswered(Lost):
    """The subscription's connection did not answer a PING in time."""


def start(
    tracker: Tracker[Any],
    keys: Keys,
    *,
    cached: Snapshot[Any] | None,
    defaults: bool,
) -> Generator[Action, Any, Snapshot[Any]]:
    """The first snapshot; fails only if Redis cannot give one and there is no fallback."""
    fallback = cached is not None or defaults
    try:
        stored = yield Read(get_op(keys), patient=not fallback)
    except (ConnectionFailed, NamespaceNotFound, NamespaceDamaged) as exc:
        return tracker.begin(None, exc, cached=cached, defaults=defaults)
    return tracker.begin(stored, None, cached=cached, defaults=defaults)


def follow(
    tracker: Tracker[Any], keys: Keys, settings: Settings, clock: Callable[[], float]
) -> Phase:
    """Connect and listen for as long as the handle runs; after a failure,
    reconnect with jittered exponential waits (the first one short and
    random: a fleet that lost Redis at once does not come back at once)."""
    base, cap = settings.reconnect_base_wait, settings.reconnect_max_wait
    while True:
        failures = 0
        while True:
            try:
                yield from connect(tracker, keys)
                break
            except Exception as exc:
                failures += 1
                tracker.connection(False, exc)
                log.debug(
                    "%s: reconnect attempt %d failed: %s",
                    keys.namespace,
                    failures,
                    tracker.last_error,
                    extra={"namespace": keys.namespace},
                )
                yield Reset()
                yield Status()
                yield Pause(jittered(failures, base, cap))
        yield Status()
        dead = False
        try:
            yield from listen(tracker, keys, clock)
        except Exception as exc:
            tracker.connection(False, exc)
            dead = isinstance(exc, Unanswered)
        yield Reset(dead=dead)
        yield Status()
        yield Pause(random.uniform(0, base))


def connect(tracker: Tracker[Any], keys: Keys) -> Phase:
    yield Subscribe(keys.channel)
    yield from _resync(tracker, keys)
    tracker.connection(True)


def listen(tracker: Tracker[Any], keys: Keys, clock: Callable[[], float]) -> Phase:
    interval = tracker.reconcile_interval
    next_probe = next_tick(clock(), interval)
    pending: str | None = None  # the token of a ping not answered yet
    while True:
        messages = yield Receive(max(0.0, next_probe - clock()))
        if messages:
            answered = yield from _handle(tracker, keys, messages, pending)
            if answered:
                pending = None
        if clock() >= next_probe:
            if pending is not None:
                raise Unanswered(f"no answer to a PING on the subscription within {interval:g}s")
            tick = next_probe  # every handle of the process probes on it: they share
            pending = yield Ping(since=tick)
            if (yield from _reconcile(tracker, keys, pending, tick)):
                pending = None
            next_probe = next_tick(clock(), interval)


def _handle(
    tracker: Tracker[Any], keys: Keys, messages: Sequence[Any], pending: str | None
) -> Generator[Action, Any, bool]:
    """Handle a batch of pub/sub messages; True if it held the pending pong."""
    events: list[Event] = []
    reread: str | None = None
    answered = False
    for message in messages:
        kind = text(message.get("type", ""))
        if kind in ("smessage", "message"):  # sharded pub/sub (SSUBSCRIBE)
            try:
                events.append(parse_event(message["data"]))
            except ProtocolError as exc:
                reread = str(exc)
        elif kind == "pong":
            answered = answered or text(message.get("data", "")) == pending
        elif kind in ("ssubscribe", "subscribe"):
            reread = "re-subscribed"
        elif kind in ("sunsubscribe", "unsubscribe"):  # a slot migrated, a primary failed over
            raise Lost("unsubscribed by the server")
    if events and reread is None:
        step = tracker.on_events(events)
        if step.action == "apply" and step.view is not None:
            yield Publish(step.old, step.view)
        elif step.action == "resync":
            reread = step.reason
    if reread is not None:
        yield from _resync(tracker, keys)
    return answered


def _resync(tracker: Tracker[Any], keys: Keys) -> Phase:
    try:
        stored = yield Read(get_op(keys))
    except NamespaceNotFound as exc:
        tracker.on_missing(exc.deleted)
        return
    except NamespaceDamaged as exc:
        tracker.on_damaged(exc)
        return
    step = tracker.on_stored(stored)
    if step.action == "apply" and step.view is not None:
        yield Publish(step.old, step.view)


def _reconcile(
    tracker: Tracker[Any], keys: Keys, pending: str | None, tick: float = 0.0
) -> Generator[Action, Any, bool]:
    """Compare the stored head with the applied version; True if the
    messages it handled meanwhile held the pending pong."""
    try:
        head = yield Read(head_op(keys), shared=f"head {keys.namespace}", since=tick)
    except NamespaceNotFound as exc:
        tracker.on_missing(exc.deleted)
        return False
    except NamespaceDamaged as exc:
        tracker.on_damaged(exc)
        return False
    answered = False
    cur = tracker.current
    if cur is not None and head.epoch == cur.epoch and head.version < cur.version:
        # the shared read may have started before this handle's last event
        # came: only a read of its own tells a stale answer from a lost write
        try:
            head = yield Read(head_op(keys))
        except NamespaceNotFound as exc:
            tracker.on_missing(exc.deleted)
            return False
        except NamespaceDamaged as exc:
            tracker.on_damaged(exc)
            return False
    if cur is not None and (head.epoch, head.version) != (cur.epoch, cur.version):
        # a busy handle may be behind its own inbox: apply what already
        # arrived before judging (the head read is shared by the process)
        messages = yield Receive(0.0)
        if messages:
            answered = yield from _handle(tracker, keys, messages, pending)
    if tracker.on_head(head):  # counted and logged by the tracker
        yield from _resync(tracker, keys)
    return answered
