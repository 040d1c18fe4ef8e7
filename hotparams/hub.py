"""One subscription per process and node, shared by its live handles: the decisions, free of I/O.

A process that follows many namespaces (or one namespace from many
handles) holds one pub/sub connection per Redis node, not one per handle.
The driver of that connection (a thread in :mod:`hotparams.live`, a task in
:mod:`hotparams.aio`) reads it and hands each message to the inboxes of the
handles that follow its channel; :class:`Routes` decides who gets what:

``smessage``       to the inboxes of its channel
``ssubscribe``     to the inboxes of its channel (the confirmation a joining
                   handle waits for; a handle already there re-reads, as
                   after any re-subscribe)
``sunsubscribe``   to the inboxes of its channel, unless this process asked
                   for it (its last handle on the channel left): the server
                   dropped the channel (a slot migrated, a primary failed
                   over), so those handles reconnect
``pong``           to every inbox: the connection answered

Each inbox receives lists of messages (one list per burst read) or, when
the connection fails, :class:`Down`: every handle on it reconnects.

Pings are shared too: a handle that probes the subscription while a PING
is in flight waits for that one's pong (:meth:`Routes.ping`), and handles
probe on a grid common to the process (:func:`next_tick`), so a process
sends one PING per reconcile interval, whatever its handle count.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .protocol import text

__all__ = ["Down", "Inbox", "Routes", "next_tick"]

#: a PING in flight for longer than this is not shared: a new one is sent
PING_SHARED_FOR = 1.0
#: a pong younger than this answers for the connection (the handles of a
#: process wake for their probes milliseconds apart: one PING serves them)
PONG_FRESH = 0.1


class Inbox(Protocol):
    """Where a handle receives its messages: ``queue.SimpleQueue`` for the
    sync handle, ``asyncio.Queue`` for the asyncio one (never full)."""

    def put_nowait(self, item: Any, /) -> None: ...


@dataclass(frozen=True, slots=True)
class Down:
    """The shared connection failed (or a handle judged it dead)."""

    error: BaseException


Join = Literal["ready", "wait", "send"]


class Routes:
    """Which inboxes hear which channel on one shared connection.

    Thread-safe: the sync driver's reader thread and the handles' threads
    call it concurrently (the asyncio driver from one loop).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inboxes: dict[str, list[Inbox]] = {}
        #: channels SSUBSCRIBE was sent for, and those Redis confirmed
        self._sent: set[str] = set()
        self._confirmed: set[str] = set()
        #: SUNSUBSCRIBE replies this process asked for and has not seen yet
        self._leaving: Counter[str] = Counter()
        self._ping: tuple[str, float] | None = None
        self._pong = -1e18  # when the last pong came
        self._pings = itertools.count(1)

    def join(self, channel: str, inbox: Inbox) -> Join:
        """Add ``inbox`` to ``channel``: "send" (send SSUBSCRIBE, then wait
        for its confirmation), "wait" (it was sent: wait for the
        confirmation) or "ready" (confirmed: listen now)."""
        with self._lock:
            self._inboxes.setdefault(channel, []).append(inbox)
            if channel in self._confirmed:
                return "ready"
            if channel in self._sent:
                return "wait"
            self._sent.add(channel)
            return "send"

    def leave(self, channel: str, inbox: Inbox) -> bool:
        """Remove ``inbox``; True if it was the channel's last (send SUNSUBSCRIBE)."""
        with self._lock:
            inboxes = self._inboxes.get(channel)
            if not inboxes or inbox not in inboxes:
                return False
            inboxes.remove(inbox)
            if inboxes:
                return False
            del self._inboxes[channel]
            if channel in self._sent:
                self._sent.discard(channel)
                self._confirmed.discard(channel)
                self._leaving[channel] += 1
                return True
            return False

    def holds(self, inbox: Inbox) -> bool:
        with self._lock:
            return any(inbox in group for group in self._inboxes.values())

    def empty(self) -> bool:
        with self._lock:
            return not self._inboxes

    def route(
        self, messages: Sequence[dict[str, Any]], now: float
    ) -> Iterable[tuple[Inbox, list[Any]]]:
        """Who gets which of ``messages`` (a burst read at ``now``, in order)."""
        out: dict[int, tuple[Inbox, list[Any]]] = {}

        def give(inboxes: Iterable[Inbox], message: Any) -> None:
            for inbox in inboxes:
                slot = out.get(id(inbox))
                if slot is None:
                    out[id(inbox)] = (inbox, [message])
                else:
                    slot[1].append(message)

        with self._lock:
            for message in messages:
                kind = text(message.get("type", ""))
                if kind == "pong":
                    self._pong = now
                    if self._ping is not None and text(message.get("data", "")) == self._ping[0]:
                        self._ping = None
                    give([i for group in self._inboxes.values() for i in group], message)
                    continue
                channel = text(message.get("channel") or "")
                if kind in ("ssubscribe", "subscribe"):
                    if channel in self._sent:
                        self._confirmed.add(channel)
                elif kind in ("sunsubscribe", "unsubscribe"):
                    if self._leaving[channel]:  # ours: the last handle left
                        self._leaving[channel] -= 1
                        if not self._leaving[channel]:
                            del self._leaving[channel]
                        continue
                    self._sent.discard(channel)  # the server dropped it
                    self._confirmed.discard(channel)
                give(self._inboxes.get(channel, ()), message)
        return list(out.values())

    def ping(self, now: float, since: float = 0.0) -> tuple[str | None, bool]:
        """The token of the PING whose pong a probing handle waits for (None:
        a pong came moments ago, or since ``since``, the handle's probe
        tick: the connection answered), and whether to send it (False: one
        is in flight, sent moments ago)."""
        with self._lock:
            if now - self._pong < PONG_FRESH or self._pong >= since > 0:
                return None, False
            if self._ping is not None and now - self._ping[1] < PING_SHARED_FOR:
                return self._ping[0], False
            token = f"hotparams-{os.getpid()}-{next(self._pings)}"
            self._ping = (token, now)
            return token, True

    def clear(self) -> list[Inbox]:
        """The connection is gone: forget every channel; the inboxes to tell."""
        with self._lock:
            everyone = [i for group in self._inboxes.values() for i in group]
            self._inboxes.clear()
            self._sent.clear()
            self._confirmed.clear()
            self._leaving.clear()
            self._ping = None
            return everyone


_phase: tuple[int, float] = (0, 0.0)


def next_tick(now: float, interval: float) -> float:
    """The next probe time after ``now`` on this process's grid of
    ``interval`` seconds: the handles of a process probe together (one
    shared PING), processes at random offsets (they do not probe at once)."""
    global _phase
    pid = os.getpid()
    if _phase[0] != pid:  # one offset per process, drawn again in a forked child
        _phase = (pid, random.random())
    offset = _phase[1] * interval
    return now + interval - ((now - offset) % interval)
