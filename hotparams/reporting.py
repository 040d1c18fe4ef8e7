"""The fleet side of a live handle, free of I/O: worker reports and exposure counts.

A handle tells Redis which version it runs (``hp_report``, see
:mod:`hotparams.fleet`): right after it applies a version (at most one
report per ``DEBOUNCE`` seconds), when its connection comes or goes, and
on a heartbeat every ``report_interval`` seconds; a report lives three
intervals, so a killed worker drops out by itself.  Closing the handle
sends ``hp_leave``.  A failed report is logged (a warning the first time,
then at debug level) and retried after a short backoff.  None of this
touches the read path or waits in the listener: one thread (sync) or task
(asyncio) per process and bus runs :func:`pumping` for every handle's
reporter (a :class:`Pump`) over a connection of its own, sending the
reports due together, one ``hp_reports`` call per namespace.

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

Actions, performed by the pump's driver (``_Reports`` in
:mod:`hotparams.live`, ``_AsyncReports`` in :mod:`hotparams.aio`):

=========== ==============================================================
``Idle``    wait until a handle applied a version or its connection
            changed (:meth:`Reporter.touch`), one joined or left, or
            ``timeout`` seconds passed
``Write``   the result of a :mod:`~hotparams.fleet` operation, sent on the
            reporting connection
=========== ==============================================================

:func:`pumping` is the pump's whole life: reports and flushes for its
members, the :func:`farewell` of each that leaves, until none is left.
"""

from __future__ import annotations

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
from .errors import ConnectionFailed
from .fleet import WorkerReport, expose_op, leave_op, report_op, reports_op, worker_id
from .protocol import Op
from .redact import describe
from .tracker import Tracker

__all__ = [
    "DEBOUNCE",
    "PER_CALL",
    "Idle",
    "Pump",
    "Reporter",
    "Tally",
    "Write",
    "farewell",
    "pumping",
    "reporting",
]

log = logging.getLogger("hotparams.fleet")

#: least time between two reports after applied versions (a burst sends few)
DEBOUNCE = 0.1
#: how long after a change its report waits for those of the process's
#: other handles (they apply the same version milliseconds apart)
GATHER = 0.02


def wakes(asleep_until: float, now: float) -> bool:
    """Whether a change (:meth:`Reporter.touch`) must wake a pump asleep until
    ``asleep_until``: its report is due GATHER after it at the soonest, so a
    pump that wakes before that sees it anyway (a thread woken per applied
    version was a sixth of a worker's CPU)."""
    return asleep_until > now + GATHER


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
        self._dirty_at = -math.inf
        self.reports = 0
        self.failures = 0
        self._last_report = -math.inf
        self._next_report = self.clock() + self.interval
        self._next_flush = self.clock() + self.exposure_interval

    def touch(self) -> bool:
        """Something worth reporting happened (called by the listener); True
        if that makes a report due (False: one is due already, and it will
        say what is current when it goes: nobody needs waking)."""
        if self.dirty:
            return False
        self._dirty_at = self.clock()
        self.dirty = True
        return True

    def _dirty_due(self) -> float:
        """When a report of a change is due: after the debounce, and a moment
        after the change (the other handles of the process that apply the
        same version report in the same call).  The first report goes at
        once: ``watch()`` waits for it (the worker is listed when it returns)."""
        if not self.reports:
            return self._last_report + DEBOUNCE
        return max(self._last_report + DEBOUNCE, self._dirty_at + GATHER)

    # ------------------------------------------------------------ timing

    def wait(self) -> float:
        """Seconds until the next report or flush is due."""
        due = min(self._next_report, self._next_flush)
        if self.dirty:
            due = min(due, self._dirty_due())
        return max(0.0, due - self.clock())

    def report_due(self, now: float, ahead: float = 0.0) -> bool:
        """Whether a report is due at ``now``; with ``ahead`` (another
        member's report is due), a heartbeat due within that many seconds
        counts too (early is harmless: a report lives three intervals), and
        a change's report at once."""
        if now + ahead >= self._next_report:
            return True
        if not self.dirty:
            return False
        # going along with another's report costs one more entry in its call:
        # no debounce, no gathering
        return bool(ahead) or now >= self._dirty_due()

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


class Pump:
    """The reporters of a process's handles on one bus, reported together.

    One driver (a thread, or a task) runs :func:`pumping` for all of them:
    the reports due at one moment go out in one ``hp_reports`` call per
    namespace (:data:`PER_CALL` at most), not one call per handle.  A handle
    joins when it starts and leaves when it closes (its farewell is sent by
    the pump); the driver ends when the last one left, and starts again
    with the next join.  Thread-safe: handles join, leave and touch from
    their own threads.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        #: each member and what to call after each of its reports was tried
        self._members: dict[Reporter, Callable[[], None]] = {}
        self._leaving: list[tuple[Reporter, Callable[[], None]]] = []
        self._running = False

    def join(self, r: Reporter, tried: Callable[[], None]) -> bool:
        """Report ``r`` from now on, calling ``tried`` after each report was
        sent or failed; True if the driver must be started."""
        with self._lock:
            self._members[r] = tried
            start, self._running = not self._running, True
            return start

    def leave(self, r: Reporter, done: Callable[[], None]) -> bool:
        """Send ``r``'s farewell, then call ``done``; True if the driver must
        be started (False: it runs and sends it next)."""
        with self._lock:
            self._members.pop(r, None)
            self._leaving.append((r, done))
            start, self._running = not self._running, True
            return start

    def cancelled(self) -> None:
        """The driver was cancelled (a Redis that does not answer, nobody
        left to wait): the next join starts another."""
        with self._lock:
            self._leaving.clear()
            self._running = False

    def members(self) -> list[tuple[Reporter, Callable[[], None]]]:
        with self._lock:
            return list(self._members.items())

    def leavers(self) -> list[tuple[Reporter, Callable[[], None]]]:
        with self._lock:
            leaving, self._leaving = self._leaving, []
            return leaving

    def finished(self) -> bool:
        """True (and the driver ends) if nobody is left to report."""
        with self._lock:
            if self._members or self._leaving:
                return False
            self._running = False
            return True

    def wait(self) -> float:
        """Seconds until a member's next report or flush is due."""
        with self._lock:
            if self._leaving:
                return 0.0
            return min((r.wait() for r in self._members), default=0.0)

    @classmethod
    def of(cls, r: Reporter) -> Pump:
        pump = cls(r.clock)
        pump.join(r, lambda: None)
        return pump


#: most reports in one hp_reports call of the pump: Redis runs a call whole,
#: 64 reports take it about 5 ms (256, the library's bound, about 18 ms)
PER_CALL = 64


def pumping(pump: Pump) -> Generator[Action, Any, None]:
    """Report and flush for every member of ``pump``, send the farewells of
    those that leave, until nobody is left."""
    while True:
        for r, done in pump.leavers():
            try:
                yield from farewell(r)
            finally:
                done()
        if pump.finished():
            return
        yield Idle(pump.wait())
        now = pump.clock()
        members = pump.members()
        groups: dict[tuple[str, str, float], list[tuple[Reporter, Callable[[], None]]]] = {}
        if any(r.report_due(now) for r, _ in members):
            # heartbeats due within half an interval go along: after one
            # round the members' heartbeats fall together, one call apiece
            for r, tried in members:
                if r.report_due(now, ahead=r.interval / 2):
                    groups.setdefault((r.namespace, r.user, r.ttl), []).append((r, tried))
        for group in groups.values():
            for start in range(0, len(group), PER_CALL):
                chunk = group[start : start + PER_CALL]
                yield from _report_together([r for r, _ in chunk], now)
                for _, tried in chunk:
                    tried()
        for r, _ in pump.members():
            if r.flush_due(now):
                yield from _flush(r, final=False)


def reporting(r: Reporter) -> Generator[Action, Any, None]:
    """Report and flush exposure counts of one reporter (a pump of one)."""
    yield from pumping(Pump.of(r))


def _report_together(group: list[Reporter], now: float) -> Generator[Action, Any, None]:
    """One call for the reports of ``group`` (one namespace, user and ttl);
    if Redis refuses it (not a lost connection), each one alone: one worker's
    refusal (a namespace at its report limit) does not silence the others."""
    if len(group) == 1:
        yield from _report(group[0], now)
        return
    reports = []
    for r in group:
        r.dirty = False  # before reading the state: a version applied meanwhile sets it again
        r._last_report = now
        reports.append(r.report())
    first = group[0]
    try:
        yield Write(reports_op(first.namespace, reports, first.ttl, first.user))
    except ConnectionFailed as exc:
        for r in group:
            r.failed("report", exc, now)
    except Exception:
        for r in group:
            yield from _report(r, now)
    else:
        for r in group:
            r.sent(now)


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
    """One worker's report alone."""
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
