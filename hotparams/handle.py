"""What the sync and asyncio live handles share, free of I/O.

The served snapshot and its A/B variants (``current``, ``for_user``), its
freshness (from the :class:`~hotparams.tracker.Tracker`), the change
callbacks and the blinker signal, the disk cache write, and the fleet
report and exposure counts (:class:`~hotparams.reporting.Reporter`).
:class:`hotparams.Live` (threads) and :class:`hotparams.aio.AsyncLive`
(asyncio tasks) add only the I/O.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import blinker
from pydantic import BaseModel

from . import lkg
from .fleet import acl_user
from .keys import keys_for
from .observer import Observer
from .otel import observer_for
from .reporting import Reporter
from .schema import ParamSchema
from .snapshot import Snapshot
from .status import LiveStatus, Rejected
from .tracker import Tracker
from .views import View, touches

if TYPE_CHECKING:
    from datetime import datetime

    from .config import Settings
    from .metrics import Metrics

__all__ = ["ChangeCallback", "Handle", "live_changed"]


M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("hotparams.live")

#: sent after a live handle applied a version: ``sender`` is the handle,
#: keyword arguments ``old`` and ``new`` the snapshots (in version order)
live_changed = blinker.signal("hotparams.live-changed")

ChangeCallback = Callable[[Snapshot[Any], Snapshot[Any]], object]

#: users whose pick a served version remembers (cleared when full)
_PICKS = 100_000

#: a user's pick: ``next()`` returns their snapshot and counts one exposure
#: of their variant (:meth:`~hotparams.reporting.Tally.handout`)
_Pick = Iterator[Snapshot[M]]


class _Served(Generic[M]):
    """What ``for_user`` reads, as one reference: the view, the base when
    there are no variants, and the pick of each user seen since it was served."""

    # a weak reference to it bounds how long the tally reads its handouts
    __slots__ = ("__weakref__", "handouts", "picks", "plain", "view")

    def __init__(self, view: View[M]) -> None:
        self.view = view
        self.plain = None if view.base.variants else view.base
        self.picks: dict[str, _Pick[M]] = {}
        #: variant (None: the base) -> its handout, shared by its users' picks
        self.handouts: dict[str | None, _Pick[M]] = {}


class Observers(Observer):
    """The metrics recorder and the observers added with ``Handle.observe``,
    told in turn; the tuple is replaced whole, never mutated (no lock on
    the listener's side)."""

    def __init__(self, *observers: Observer) -> None:
        self._all: tuple[Observer, ...] = observers
        self._lock = threading.Lock()

    def add(self, observer: Observer) -> None:
        with self._lock:
            self._all = (*self._all, observer)

    def remove(self, observer: Observer) -> None:
        with self._lock:
            self._all = tuple(o for o in self._all if o is not observer)

    def _each(self, name: str, *args: Any) -> None:
        for observer in self._all:
            try:
                getattr(observer, name)(*args)
            except Exception:
                log.exception("an observer failed in %s", name)

    def applied(self, version: int, lag_s: float) -> None:
        self._each("applied", version, lag_s)

    def resynced(self) -> None:
        self._each("resynced")

    def rejected(self) -> None:
        self._each("rejected")

    def reconnected(self) -> None:
        self._each("reconnected")

    def connection(self, connected: bool) -> None:
        self._each("connection", connected)

    def callback_failed(self) -> None:
        self._each("callback_failed")


class Handle(Generic[M]):
    """What the sync and asyncio handles share, free of I/O: the served
    snapshot, its freshness, and the change callbacks."""

    # the two references readers load are slots: a read of ``current`` is
    # specialised however many attributes the handles grow
    __slots__ = ("__dict__", "__weakref__", "_served", "current")

    #: the snapshot being served (replaced whole, never mutated)
    current: Snapshot[M]
    #: ``current``, its variants merged and the users' picks, as one reference
    #: (read by ``for_user``)
    _served: _Served[M]

    def __init__(
        self,
        namespace: str,
        schema: ParamSchema[M],
        *,
        settings: Settings,
        url: str = "",
        cache: str | os.PathLike[str] | None = None,
        defaults: bool = False,
        reconcile_interval: float | None = None,
        worker_name: str = "",
        metrics: Metrics | None = None,
    ) -> None:
        from .metrics import default_metrics

        self.namespace = namespace
        self.schema = schema
        self.cache = Path(cache) if cache is not None else None
        #: serve the model's defaults if neither Redis nor the cache can give a first snapshot
        self._defaults = defaults
        self.metrics = metrics if metrics is not None else default_metrics()
        self._observer = Observers(self.metrics.observer(namespace))
        traced = observer_for(self)  # OpenTelemetry's, when its API is installed
        if traced is not None:
            self._observer.add(traced)
        self._keys = keys_for(namespace)
        self._tracker: Tracker[M] = Tracker(
            namespace,
            schema,
            reconcile_interval=reconcile_interval or settings.reconcile_interval,
            observer=self._observer,
        )
        self._reporter = Reporter(
            self._tracker,
            name=worker_name,
            interval=settings.report_interval,
            exposure_interval=settings.exposure_interval,
            user=acl_user(url),
        )
        self._callbacks: tuple[tuple[ChangeCallback, frozenset[str] | None], ...] = ()
        self._callbacks_lock = threading.Lock()
        self._callback_errors = 0
        self._closed = False

    # ------------------------------------------------------------ reading

    def for_user(self, user_id: str) -> Snapshot[M]:
        """The snapshot ``user_id`` gets: the base merged with their A/B
        variant (``.variant`` names it; None: the base, ``current`` itself).

        No lock and no I/O: the merged snapshots were built when the version
        was applied, and they are swapped with the base as one reference, so
        a user's snapshot is always of one version.  The assignment is sticky
        (a hash of namespace, the experiment's salt and the user id) and is
        counted as one exposure of the variant, sent to Redis in batches.
        After a user's first call for a version, a call is one dict lookup
        and one ``next()``, which returns the snapshot and counts it.
        """
        served = self._served
        if served.plain is not None:  # no variants
            return served.plain
        try:
            return next(served.picks[user_id])
        except KeyError:
            return next(self._pick(served, user_id))

    def _pick(self, served: _Served[M], user_id: str) -> _Pick[M]:
        """A user's first call for this version: assign, then remember."""
        view = served.view
        base = view.base
        variants = base.variants
        name = variants.assign(base.namespace, user_id)
        pick = served.handouts.get(name)
        if pick is None:  # setdefault: two first picks share one handout
            snap = base if name is None else view.merged[name]
            fresh = self._reporter.tally.handout(variants.salt, name, snap, served)
            pick = served.handouts.setdefault(name, fresh)
        picks = served.picks
        if len(picks) >= _PICKS:  # bounded; a lost race costs one recomputation
            picks.clear()
        picks[user_id] = pick
        return pick

    @property
    def worker_id(self) -> str:
        """This process's id in the fleet reports (``host:pid[:name]``)."""
        return self._reporter.id

    def _install(self, view: View[M]) -> None:
        """Serve ``view``: readers of ``for_user`` see the new base and its
        variants at once (one reference), then ``current`` follows."""
        self._served = _Served(view)
        self.current = view.base

    def _new_worker(self) -> None:
        """In a forked child: a worker id and a tally of its own; the picks
        held the parent's handouts, so they are made again."""
        self._reporter.restart()
        self._served = _Served(self._served.view)

    def _cached(self) -> Snapshot[M] | None:
        return lkg.load(self.cache, self.namespace, self.schema) if self.cache else None

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self.connected else "disconnected")
        kind = type(self).__name__
        snap = getattr(self, "current", None)  # None only while the first read runs
        version = f"v{snap.version}" if snap is not None else "starting"
        return f"<hotparams.{kind} {self.namespace!r} {version} {state}>"

    # ------------------------------------------------------------ freshness

    def status(self) -> LiveStatus:
        """Version, connection, freshness and problems, as one value."""
        return self._tracker.status()

    @property
    def connected(self) -> bool:
        """Subscribed and in sync (False during an outage and before the first connect)."""
        return self._tracker.connected and not self._closed

    @property
    def confirmed_at(self) -> datetime | None:
        """When the handle last confirmed its snapshot was the current one."""
        return self._tracker.status().confirmed_at

    @property
    def staleness(self) -> float:
        """Seconds since that confirmation (``inf`` if never): how old the snapshot may be."""
        return self._tracker.staleness()

    @property
    def stale(self) -> bool:
        """True when the handle cannot vouch that it serves the current version."""
        return self._tracker.status().stale

    @property
    def lost(self) -> bool:
        """The namespace is missing in Redis (flushed); the last good snapshot is served."""
        return self._tracker.lost

    @property
    def rejected(self) -> Rejected | None:
        """The newest stored version the model refused, if any (the reason is in it)."""
        return self._tracker.rejected

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ observers

    def observe(self, observer: Observer) -> None:
        """Tell ``observer`` (a :class:`hotparams.observer.Observer`) what this
        handle decides: each applied version with its lag, each change of its
        connection, re-reads, rejections.  Its methods run in the listener
        (thread or task): they must be quick and must not block; one that
        raises is logged and stops nothing (the OpenFeature provider and the
        OpenTelemetry instrumentation observe this way)."""
        self._observer.add(observer)

    def unobserve(self, observer: Observer) -> None:
        self._observer.remove(observer)

    # ------------------------------------------------------------ callbacks

    @overload
    def on_change(
        self, callback: None = None, *, fields: Collection[str] | None = None
    ) -> Callable[[ChangeCallback], ChangeCallback]: ...

    @overload
    def on_change(
        self, callback: ChangeCallback, *, fields: Collection[str] | None = None
    ) -> ChangeCallback: ...

    def on_change(
        self, callback: ChangeCallback | None = None, *, fields: Collection[str] | None = None
    ) -> ChangeCallback | Callable[[ChangeCallback], ChangeCallback]:
        """Call ``callback(old, new)`` after each applied change (also as a decorator).

        With ``fields``, only for changes of one of those fields.  Callbacks
        run one at a time, in version order, off the read path (the sync
        handle's callback thread; the asyncio handle's callback task, which
        awaits a callback that returns an awaitable); an exception is
        logged and does not stop the others.  A burst of changes may be
        folded into one call.
        """
        if callback is None:

            def decorator(cb: ChangeCallback) -> ChangeCallback:
                return self.on_change(cb, fields=fields)

            return decorator
        names = None
        if fields is not None:
            names = frozenset([fields] if isinstance(fields, str) else fields)
            self.schema.check_names(self.namespace, names)
        with self._callbacks_lock:
            self._callbacks = (*self._callbacks, (callback, names))
        return callback

    def off_change(self, callback: ChangeCallback) -> None:
        """Stop calling ``callback``."""
        with self._callbacks_lock:
            self._callbacks = tuple(c for c in self._callbacks if c[0] is not callback)

    @property
    def callback_errors(self) -> int:
        """How many callback calls raised (each was logged)."""
        return self._callback_errors

    def _dispatching(self) -> bool:
        """Whether an applied change gives the dispatcher work (callbacks,
        blinker receivers, the cache file): else it is not woken for it (a
        thread wake-up per version was a tenth of a worker's apply CPU)."""
        return bool(self._callbacks) or bool(live_changed.receivers) or self.cache is not None

    def _listeners(self, old: Snapshot[M], new: Snapshot[M]) -> list[Callable[[], object]]:
        """The calls a change from ``old`` to ``new`` makes, in order."""
        calls: list[Callable[[], object]] = [
            functools.partial(callback, old, new)
            for callback, fields in self._callbacks
            if touches(fields, old, new)
        ]
        calls += [
            functools.partial(receiver, self, old=old, new=new)
            for receiver in live_changed.receivers_for(self)
        ]
        return calls

    def _callback_failed(self, old: Snapshot[M], new: Snapshot[M]) -> None:
        self._callback_errors += 1
        self._observer.callback_failed()
        log.exception(
            "%s: a change callback failed (version %d -> %d)",
            self.namespace,
            old.version,
            new.version,
            extra={
                "namespace": self.namespace,
                "version": new.version,
                "previous": old.version,
                "event": "callback-failed",
            },
        )

    def _save(self, snap: Snapshot[M] | None) -> None:
        if snap is None or self.cache is None:
            return
        try:
            lkg.save(self.cache, snap, self.schema)
        except OSError as exc:
            log.warning(
                "%s: cannot write the cache file %s: %s",
                self.namespace,
                self.cache,
                exc,
                extra={"namespace": self.namespace, "version": snap.version},
            )
