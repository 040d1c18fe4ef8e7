"""The fleet side of a live handle, free of I/O: worker reports and exposure counts.

A handle tells Redis which version it runs (``hp_report``, see
:mod:`hotparams.fleet`): right after it applies a version (at most one
report per ``DEBOUNCE`` seconds), when its connection comes or goes, and
on a heartbeat every ``report_interval`` seconds; a report lives three
intervals, so a killed worker drops out by itself.  Closing the handle
sends ``hp_leave``.  A failed report is logged (a warning the first time,
then at debug level) and retried after a short backoff.  None of this
touches the read path or waits in the listener: a thread (sync) or a task
(asyncio) of its own runs the :func:`reporting` phase over a connection of
its own.

Exposure counts of A/B variants: each ``for_user`` call counts one
assignment with ``next()`` on the user's :meth:`Tally.handout`, an
:class:`itertools.repeat` of their snapshot (no lock, no I/O, no allocation:
``next()`` returns the snapshot and takes one off the repeat's count, one
step under the GIL).  The reporting phase
sends them with ``hp_expose`` every ``exposure_interval`` seconds and on
close.  A key's counter is never replaced: a flush takes the difference
since the flush before (see :class:`Tally`), so a ``for_user`` call that
looked its counter up just before a flush is counted at the next one, never
lost, however many flushes pass meanwhile.

Actions, performed by the drivers of :class:`hotparams.runner.Backend`
(the ``verb`` of each names the method):

=========== ==============================================================
``Idle``    wait until the handle applied a version or its connection
            changed (:meth:`Reporter.touch`), or ``timeout`` seconds passed;
            ``Stopped`` when the handle closes
``Write``   the result of a :mod:`~hotparams.fleet` operation, sent on the
            reporting connection
=========== ==============================================================

:func:`lifetime` is the reporter's whole life: :func:`reporting` until the
handle closes, then :func:`farewell`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import operator
import os
import socket
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .backoff import jittered
from .driving import Stopped
from .fleet import WorkerReport, expose_op, leave_op, report_op, worker_id
from .protocol import Op
from .redact import describe
from .tracker import Tracker

__all__ = [
    "DEBOUNCE",
    "Idle",
    "Reporter",
    "Tally",
    "Write",
    "farewell",
    "lifetime",
    "reporting",
]

log = logging.getLogger("hotparams.fleet")

#: least time between two reports after applied versions (a burst sends few)
DEBOUNCE = 0.1
#: a report lives this many heartbeat intervals unless renewed
TTL_INTERVALS = 3
#: first wait before retrying a failed report (doubling up to the interval)
RETRY_FIRST = 0.1

Key = tuple[str, str | None]  # (the experiment's salt, variant name or None for the base)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Idle:
    verb: ClassVar[str] = "_idle"
    timeout: float


@dataclass(frozen=True, slots=True)
class Write:
    verb: ClassVar[str] = "_write"
    op: Op[Any]


Action = Idle | Write


#: the reads one handout can serve: ``itertools.repeat``'s count, 2**63 - 1
#: on 64-bit CPython (three centuries at a billion reads a second)
SERVES = sys.maxsize


class _Handout:
    """A repeat of one snapshot handed out for (salt, variant) reads, and
    the owner whose life bounds its use (the served version of a handle)."""

    __slots__ = ("key", "left", "owner", "served")

    def __init__(self, key: Key, served: Iterator[Any], owner: object) -> None:
        self.key = key
        self.served = served
        self.owner = weakref.ref(owner)
        #: the repeat's count when ``collect`` last read it
        self.left = SERVES


class Tally:
    """Assignment counts per (salt, variant), counted without a lock.

    ``for_user`` counts with :meth:`handout`: an :class:`itertools.repeat`
    of the user's snapshot, whose ``next()`` returns the snapshot and takes
    one off the repeat's count (C, atomic under the GIL, no allocation);
    ``collect`` reads how far each went (its length hint), and forgets
    a handout once its owner is gone (no call can reach it any more: a
    caller holds the owner while it calls), after one last reading.

    Each key has one :class:`itertools.count` for the life of the tally
    (a handle's life: a fork starts a fresh one).  ``collect`` reads a
    counter with ``next()`` too: that returns its value and adds one, so
    the tally remembers where the next reading starts (``_taken``).  No
    counter is ever swapped out, so no increment can land on one that is
    no longer read (the double-buffered generations this replaces lost a
    count when two flushes passed between a ``count`` call's lookup and its
    ``next()``).  The keys are the (salt, variant) pairs the handle ever
    counted, a few per experiment.
    """

    def __init__(self) -> None:
        self.counters: dict[Key, itertools.count[int]] = {}
        #: per key: the counter's value right after the last collect read it
        self._taken: dict[Key, int] = {}
        self._carry: Counter[Key] = Counter()
        self._handouts: set[_Handout] = set()

    def handout(self, salt: str, name: str | None, value: T, owner: object) -> Iterator[T]:
        """An iterator yielding ``value`` forever, each ``next()`` one
        assignment of (salt, name), read for as long as ``owner`` lives
        (thread-safe: a set's add is one step under the GIL)."""
        served = itertools.repeat(value, SERVES)
        self._handouts.add(_Handout((salt, name), served, owner))
        return served

    def counter(self, salt: str, name: str | None) -> itertools.count[int]:
        """The counter of one key: ``next()`` on it counts one assignment
        (``for_user`` keeps it with each user's pick)."""
        counter = self.counters.get((salt, name))
        if counter is None:  # setdefault: two first counts share one counter
            counter = self.counters.setdefault((salt, name), itertools.count())
        return counter

    def count(self, salt: str, name: str | None) -> None:
        """One assignment (thread-safe: ``next()`` on a count is atomic)."""
        next(self.counter(salt, name))

    def collect(self) -> dict[str, dict[str | None, int]]:
        """Counts since the last collect, by salt, forgotten here (``restore``
        gives back a batch that could not be sent).  Called by one party
        (the reporting phase) at a time."""
        totals, self._carry = self._carry, Counter()
        taken = self._taken
        for key, counter in list(self.counters.items()):
            value = next(counter)  # the count so far; our own step is remembered
            totals[key] += value - taken.get(key, 0)
            taken[key] = value + 1
        for handout in list(self._handouts):
            gone = handout.owner() is None  # first: then the reading below is the last
            left = operator.length_hint(handout.served)
            totals[handout.key] += handout.left - left
            handout.left = left
            if gone:
                self._handouts.discard(handout)
        out: dict[str, dict[str | None, int]] = {}
        for (salt, name), n in totals.items():
            if n:
                out.setdefault(salt, {})[name] = n
        return out

    def restore(self, salt: str, counts: dict[str | None, int]) -> None:
        for name, n in counts.items():
            self._carry[(salt, name)] += n


class _Ids:
    """Worker ids in use in this process, so that two handles on one
    namespace report as two workers (``host:pid:name``, then ``...#2``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[tuple[int, str, str]] = set()

    def take(self, namespace: str, base: str) -> str:
        pid = os.getpid()
        with self._lock:
            n = 1
            while (pid, namespace, _numbered(base, n)) in self._taken:
                n += 1
            chosen = _numbered(base, n)
            self._taken.add((pid, namespace, chosen))
            return chosen

    def give_back(self, namespace: str, worker: str) -> None:
        with self._lock:
            self._taken.discard((os.getpid(), namespace, worker))


def _numbered(base: str, n: int) -> str:
    return base if n == 1 else f"{base}#{n}"


_ids = _Ids()


class Reporter:
    """When a handle reports, what it says, and its exposure counts.

    Written by two parties: the listener calls :meth:`touch` after it
    applied a version or its connection changed; the reporting phase (one
    thread or task) does the rest.  ``dirty`` is cleared before the state
    is read, so a version applied meanwhile is reported next time.
    """

    def __init__(
        self,
        tracker: Tracker[Any],
        *,
        name: str = "",
        interval: float,
        exposure_interval: float,
        clock: Callable[[], float] = time.monotonic,
        user: str = "default",
    ) -> None:
        self.tracker = tracker
        self.namespace = tracker.namespace
        self.name = name
        #: the ACL user the bus connects as (claimed: Redis cannot tell a function)
        self.user = user
        self.interval = interval
        self.ttl = TTL_INTERVALS * interval
        self.exposure_interval = exposure_interval
        self.clock = clock
        self.tally = Tally()
        self.id = ""
        self.restart()

    def restart(self) -> None:
        """A new worker identity and fresh counts (at start, and in a forked child)."""
        if self.id:  # a restart in the same process frees the old id
            _ids.give_back(self.namespace, self.id)
        self.id = _ids.take(self.namespace, worker_id(self.name))
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.tally = Tally()
        # the first report follows the listener's first connection (it
        # touches the reporter), or the first heartbeat if that never comes
        self.dirty = False
        self.reports = 0
        self.failures = 0
        self._last_report = -math.inf
        self._next_report = self.clock() + self.interval
        self._next_flush = self.clock() + self.exposure_interval

    def touch(self) -> None:
        """Something worth reporting happened (called by the listener)."""
        self.dirty = True

    # ------------------------------------------------------------ timing

    def wait(self) -> float:
        """Seconds until the next report or flush is due."""
        due = min(self._next_report, self._next_flush)
        if self.dirty:
            due = min(due, self._last_report + DEBOUNCE)
        return max(0.0, due - self.clock())

    def report_due(self, now: float) -> bool:
        return now >= self._next_report or (self.dirty and now >= self._last_report + DEBOUNCE)

    def flush_due(self, now: float) -> bool:
        if now < self._next_flush:
            return False
        self._next_flush = now + self.exposure_interval
        return True

    # ------------------------------------------------------------ the report

    def report(self) -> WorkerReport:
        """What this worker says about itself now."""
        t = self.tracker
        view = t.view
        status = t.status()
        extra: dict[str, Any] = {}
        error = "" if status.connected else (status.last_error or "")
        if status.rejected is not None:
            fields = ", ".join(sorted(status.rejected.errors))
            error = f"version {status.rejected.version} does not fit the model ({fields})"
            extra["rejected"] = status.rejected.version
        if status.lost:
            error = "the namespace is missing in Redis"
            extra["lost"] = True
        if status.origin != "redis":
            extra["origin"] = status.origin
        confirmed = status.confirmed_at
        return WorkerReport(
            id=self.id,
            namespace=self.namespace,
            version=view.base.version if view else 0,
            epoch=view.base.epoch if view else "",
            host=self.host,
            pid=self.pid,
            name=self.name,
            user=self.user,
            connected=status.connected,
            committed_ms=view.base.committed_ms if view else 0,
            applied_ms=view.applied_ms if view else 0,
            lag_ms=round(view.lag_ms, 3) if view else 0.0,
            confirmed_ms=int(confirmed.timestamp() * 1000) if confirmed else 0,
            last_error=error,
            started_ms=t.started_ms,
            digest=view.base.digest if view else "",
            extra=extra,
        )

    def sent(self, now: float) -> None:
        if self.failures:
            log.info(
                "%s: reporting to Redis again (worker %s)",
                self.namespace,
                self.id,
                extra={"namespace": self.namespace, "worker": self.id, "event": "report"},
            )
        self.failures = 0
        self.reports += 1
        self._next_report = now + self.interval

    def failed(self, what: str, exc: BaseException, now: float) -> None:
        self.failures += 1
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(
            level,
            "%s: cannot send the %s of worker %s (retrying): %s",
            self.namespace,
            what,
            self.id,
            describe(exc),
            extra={"namespace": self.namespace, "worker": self.id, "event": "report-failed"},
        )
        if what == "report":
            self._next_report = now + jittered(self.failures, RETRY_FIRST, self.interval)


def lifetime(r: Reporter) -> Generator[Action, Any, None]:
    """Report until the handle closes (its driver raises Stopped), then
    send the last counts and leave the fleet."""
    with contextlib.suppress(Stopped):
        yield from reporting(r)
    yield from farewell(r)


def reporting(r: Reporter) -> Generator[Action, Any, None]:
    """Report and flush exposure counts, for as long as the handle runs."""
    while True:
        yield Idle(r.wait())
        now = r.clock()
        if r.report_due(now):
            yield from _report(r, now)
        if r.flush_due(now):
            yield from _flush(r, final=False)


def farewell(r: Reporter) -> Generator[Action, Any, None]:
    """On close: the last exposure counts, then leave the fleet (if it ever joined)."""
    _ids.give_back(r.namespace, r.id)
    yield from _flush(r, final=True)
    if not r.reports:
        return
    try:
        yield Write(leave_op(r.namespace, r.id, r.user))
    except Exception as exc:
        log.debug("%s: cannot leave the fleet: %s", r.namespace, describe(exc))


def _report(r: Reporter, now: float) -> Generator[Action, Any, None]:
    r.dirty = False  # before reading the state: a version applied meanwhile sets it again
    r._last_report = now
    try:
        yield Write(report_op(r.namespace, r.report(), r.ttl))
    except Exception as exc:
        r.failed("report", exc, now)
    else:
        r.sent(now)


def _flush(r: Reporter, *, final: bool) -> Generator[Action, Any, None]:
    for salt, counts in r.tally.collect().items():
        try:
            yield Write(expose_op(r.namespace, salt, counts))
        except Exception as exc:
            if final:
                log.warning(
                    "%s: exposure counts lost on close: %s",
                    r.namespace,
                    describe(exc),
                    extra={"namespace": r.namespace, "event": "exposures-lost"},
                )
            else:
                r.tally.restore(salt, counts)
                r.failed("exposure counts", exc, r.clock())
