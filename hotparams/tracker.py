"""What a live handle does with what it hears, decided without I/O.

A :class:`Tracker` holds the snapshot a worker serves and decides, for each
thing the listener learns, what happens to it:

* a batch of change events: applied from the events alone when they
  continue the applied version without a gap (a burst is folded into one
  new snapshot), ignored when already superseded, or answered with a
  re-read of the whole current version (a gap, another history, a secret
  that changed, an unexpected duplicate);
* a whole stored version (a re-read): applied when newer or of another
  history (an *epoch*: a namespace recreated after a loss starts its
  version numbers again), confirmed when equal, never applied when older;
* a head probe (the periodic reconcile): confirms, or asks for a re-read;
* a namespace that is missing: the snapshot is kept and the loss reported.

A version that the model rejects is never applied: the last good snapshot
stays, the reason is kept in :attr:`Tracker.rejected` and logged once.
The sync and asyncio handles (:mod:`hotparams.live`, :mod:`hotparams.aio`)
only do the I/O around this.

Applying a version builds a :class:`~hotparams.views.View` (the base and
its merged A/B variants); every decision is logged (:mod:`hotparams.livelog`)
and told to an :class:`~hotparams.observer.Observer`.  The parts live in
modules of their own: the channel's events (:mod:`hotparams.events`), the
views (:mod:`hotparams.views`), the reported values (:mod:`hotparams.status`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from .errors import HotParamsError, InvalidParams, NamespaceNotFound, Tombstone
from .events import Event
from .livelog import extra_of, log, log_applied
from .observer import Observer
from .protocol import Head, Stored
from .redact import describe
from .schema import ParamSchema
from .snapshot import Snapshot, frozen_mapping
from .status import LiveStatus, Origin, Rejected, Step
from .variants import VariantSet
from .views import View, build_view, defaults_snapshot

__all__ = ["Tracker"]

M = TypeVar("M", bound=BaseModel)


class Tracker(Generic[M]):
    """The applied snapshot of one namespace and every decision about it.

    One writer, many readers.  Every decision (the ``on_*`` methods,
    ``begin``, ``connection``, ``restarted``) is made by one listener, a
    thread of a :class:`~hotparams.Live` or a task of an
    :class:`~hotparams.aio.AsyncLive`, never two at once.  Other threads
    only read: the reporter (``view``, :meth:`status`), readers of the
    handle (``status()``, ``connected``, ``rejected`` ...); and ``close()``
    writes ``connected = False`` (and an asyncio handle ``last_error``)
    once the listener is stopped or abandoned.

    That is safe without a lock because each attribute is replaced by one
    assignment of an immutable value (a frozen snapshot, view, Rejected or
    Tombstone, an int, a bool, a str), never mutated in place: a reader
    sees each attribute before or after a decision, never half of one.  A
    :meth:`status` read while a decision is made may combine attributes of
    the states before and after it (say, the new version with the old
    ``applied`` count); it is a report of a moment, every field true at
    most one decision ago.
    """

    def __init__(
        self,
        namespace: str,
        schema: ParamSchema[M],
        *,
        reconcile_interval: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        observer: Observer | None = None,
    ) -> None:
        self.namespace = namespace
        self.schema = schema
        self.reconcile_interval = reconcile_interval
        self.clock = clock
        self.wall = wall
        self.observer = observer or Observer()
        #: when the handle started (wall clock, ms): lags of versions
        #: committed before then are counted from here
        self.started_ms = int(wall() * 1000)
        self.current: Snapshot[M] | None = None
        self.view: View[M] | None = None
        self.origin: Origin = "redis"
        self.connected = False
        self.lost = False
        self.rejected: Rejected | None = None
        self.deleted: Tombstone | None = None
        self.epoch_changes = 0
        self.applied = 0
        self.resyncs = 0
        self.reconnects = 0
        self.rewinds = 0
        #: why the namespace's stored state cannot be read (a partial loss), if so
        self.damaged: str | None = None
        self.last_error: str | None = None
        self._ever_connected = False
        self._down_since: float | None = None  # clock()
        self._confirmed: float | None = None  # clock()
        self._confirmed_wall: float | None = None
        self._read_version = 0  # highest version of this epoch seen by a re-read

    # ------------------------------------------------------------ start

    def begin(
        self,
        stored: Stored | None,
        error: HotParamsError | None,
        *,
        cached: Snapshot[M] | None = None,
        defaults: bool = False,
    ) -> Snapshot[M]:
        """The first snapshot: from Redis, else the disk cache, else the defaults.

        ``stored`` is the first read (None when it failed with ``error``).
        Raises ``error`` (or the rejection) when there is no fallback.
        """
        if stored is not None:
            self.on_stored(stored)
            if self.current is not None:
                return self.current
            assert self.rejected is not None
            error = InvalidParams(self.namespace, self.rejected.errors)
        elif isinstance(error, NamespaceNotFound):
            self.lost = True
            self.deleted = error.deleted
        why = str(error) if error is not None else "no Redis"
        if cached is not None:
            self._install(cached, "cache")
            log.warning(
                "%s: serving cached version %d (epoch %s) until Redis confirms it: %s",
                self.namespace,
                cached.version,
                cached.epoch,
                why,
                extra=self._extra(cached.version),
            )
            return cached
        if defaults:
            snap = defaults_snapshot(self.namespace, self.schema)
            self._install(snap, "defaults")
            log.warning(
                "%s: serving the model's defaults until Redis answers: %s",
                self.namespace,
                why,
                extra=self._extra(0),
            )
            return snap
        assert error is not None
        raise error

    def _install(self, snap: Snapshot[M], origin: Origin) -> None:
        now_ms = int(self.wall() * 1000)
        self.view = build_view(self.schema, snap, now_ms, 0.0)
        self.current = snap
        self.origin = origin

    def restarted(self) -> None:
        """In a process forked from the one that made the handle: a new start."""
        self.started_ms = int(self.wall() * 1000)
        self.connected = False
        self._ever_connected = False
        self._down_since = None

    # ------------------------------------------------------------ decisions

    def on_events(self, events: Iterable[Event]) -> Step:
        """Apply a batch of events from the events alone, or say why not."""
        cur = self.current
        if cur is None:
            return self._resync("no snapshot yet")
        fresh: dict[int, Event] = {}
        for event in events:
            if event.op == "delete":
                return self._resync("the namespace was deleted")
            if event.epoch != cur.epoch:
                return self._resync(f"event of another history (epoch {event.epoch})")
            if event.version <= cur.version:
                if event.version > self._read_version:
                    return self._resync(f"duplicate event for version {event.version}")
                continue  # published before the last re-read: superseded
            fresh.setdefault(event.version, event)
        if not fresh:
            return Step("ignore", "superseded")
        return self._fold(cur, [fresh[v] for v in sorted(fresh)])

    def _fold(self, cur: Snapshot[M], fresh: list[Event]) -> Step:
        """The next snapshot from consecutive events (a burst becomes one version)."""
        expected = cur.version + 1
        values = dict(cur.values)
        variants = cur.variants
        digest = cur.digest
        for event in fresh:
            if event.prev_digest and digest and event.prev_digest != digest:
                # the change was made to another state than the one held
                # (a forged event before it, or a lost one): Redis decides
                return self._resync(
                    f"version {event.version} follows another content than the held version "
                    f"{expected - 1}"
                )
            if event.version != expected or event.previous != expected - 1:
                refused = self.rejected
                if refused and refused.epoch == cur.epoch and refused.version >= expected:
                    return self._resync(f"version {refused.version} was refused")
                return self._resync(f"gap: at version {expected - 1}, got {event.version}")
            if event.redacted:
                return self._resync("a secret changed")
            values.update(event.changed)
            for name in event.removed:
                values.pop(name, None)
            if event.variants_changed:
                try:
                    variants = VariantSet.from_json(event.variants)
                except (ValueError, TypeError, AttributeError):
                    return self._resync("malformed variants in an event")
            digest = event.digest
            expected += 1
        last = fresh[-1]
        self._confirm()
        return self._adopt(
            last.epoch,
            last.version,
            last.committed_ms,
            last.schema_rev,
            values,
            variants,
            "event",
            digest,
        )

    def on_stored(self, stored: Stored) -> Step:
        """A whole current version, just read: Redis's state, which the handle adopts.

        Redis is the only source of versions: events are claims anyone who
        may PUBLISH can make.  So the handle confirms what it holds when
        Redis holds the same (version and digest), and otherwise takes
        Redis's state, even a lower version of the same history: the one
        held then never was Redis's (a forged event) or Redis lost it (a
        failover to a replica that had not received it).  Such a step back
        is logged as an error and counted (``rewinds``); versions Redis
        committed and still holds are never left for an older one.
        """
        self.lost = False
        self.deleted = None
        self.damaged = None
        cur = self.current
        if cur is not None and stored.epoch == cur.epoch:
            self._read_version = stored.version
            same = not (stored.digest and cur.digest and stored.digest != cur.digest)
            if stored.version == cur.version and same:
                self._confirm()
                if self.origin != "redis":
                    self.origin = "redis"
                    log.info(
                        "%s: Redis confirms the cached version %d",
                        self.namespace,
                        cur.version,
                        extra=self._extra(cur.version),
                    )
                self._clear_rejection(cur.version)
                return Step("keep", "current")
            if stored.version < cur.version or stored.version == cur.version:
                self.rewinds += 1
                log.error(
                    "%s: Redis holds version %d (digest %s), not the applied version %d "
                    "(digest %s), which Redis never held or lost; adopting Redis's state",
                    self.namespace,
                    stored.version,
                    stored.digest[:12] or "?",
                    cur.version,
                    cur.digest[:12] or "?",
                    extra=self._extra(cur.version, event="rewind"),
                )
        else:
            self._read_version = stored.version
        self._confirm()
        try:
            values = stored.values()
        except InvalidParams as exc:  # stored bytes that are not UTF-8 / JSON
            return self._reject(stored.epoch, stored.version, exc)
        return self._adopt(
            stored.epoch,
            stored.version,
            stored.committed_ms,
            stored.schema_rev,
            values,
            VariantSet.from_json(stored.variants),
            "read",
            stored.digest,
        )

    def on_head(self, head: Head) -> bool:
        """The reconcile probe: True when the stored state must be re-read."""
        self.lost = False
        cur = self.current
        same = not (head.digest and cur and cur.digest and head.digest != cur.digest)
        if cur is not None and (head.epoch, head.version) == (cur.epoch, cur.version) and same:
            if self.origin != "redis":
                self._resync("confirm the cached version")
                return True  # let the re-read confirm the cached snapshot
            self._confirm()
            return False
        rejected = self.rejected
        if rejected and (head.epoch, head.version, head.digest) == (
            rejected.epoch,
            rejected.version,
            rejected.digest,
        ):
            return False
        if cur is not None and not same and head.version == cur.version:
            self._resync(f"Redis holds version {head.version} with another content")
            return True
        # often only an event still on its way: a re-read, not a fault
        self._resync(f"the reconcile probe found version {head.version} (epoch {head.epoch})")
        return True

    def on_damaged(self, exc: HotParamsError) -> Step:
        """Redis refuses the stored version as damaged (a partial loss): keep
        the last good snapshot, say why once, and report stale until it is
        restored."""
        if self.damaged is None:
            version = self._version()
            log.error(
                "%s: keeping version %d: %s",
                self.namespace,
                version,
                exc,
                extra=self._extra(version, event="damaged"),
            )
        self.damaged = str(exc)
        return Step("keep", "damaged")

    def on_missing(self, deleted: Tombstone | None = None) -> Step:
        """The namespace is not in Redis (flushed, restarted empty, deleted:
        then ``deleted`` is its tombstone)."""
        if not self.lost or (deleted is not None and self.deleted is None):
            self.lost = True
            self.deleted = deleted
            cur = self.current
            version = cur.version if cur else 0
            if deleted is not None:
                log.error(
                    "%s: the namespace was %s; keeping version %d until it is registered again",
                    self.namespace,
                    deleted.describe(),
                    version,
                    extra=self._extra(version, event="deleted"),
                )
            else:
                log.error(
                    "%s: the namespace is missing in Redis (flushed or restarted empty); "
                    "keeping version %d; restore it with Bus.restore",
                    self.namespace,
                    version,
                    extra=self._extra(version, event="lost"),
                )
        return Step("keep", "deleted" if deleted is not None else "missing")

    def connection(self, connected: bool, error: BaseException | None = None) -> None:
        if error is not None:
            self.last_error = describe(error)
        if connected == self.connected:
            return
        self.connected = connected
        self.observer.connection(connected)
        version = self._version()
        if connected and self._ever_connected:
            self.reconnects += 1
            self.observer.reconnected()
            down = self.clock() - self._down_since if self._down_since is not None else 0.0
            log.info(
                "%s: reconnected after %.1f s, serving version %d",
                self.namespace,
                down,
                version,
                extra={**self._extra(version), "event": "reconnect", "down_s": round(down, 3)},
            )
        elif connected:
            log.info(
                "%s: listening, serving version %d",
                self.namespace,
                version,
                extra=self._extra(version, event="listen"),
            )
        else:
            self._down_since = self.clock()
            log.warning(
                "%s: connection lost, serving version %d: %s",
                self.namespace,
                version,
                self.last_error,
                extra=self._extra(version, event="disconnect"),
            )
        self._ever_connected = self._ever_connected or connected

    # ------------------------------------------------------------ freshness

    @property
    def stale_after(self) -> float:
        return 2 * self.reconcile_interval + 1.0

    def staleness(self) -> float:
        if self._confirmed is None:
            return math.inf
        return max(0.0, self.clock() - self._confirmed)

    def status(self) -> LiveStatus:
        cur = self.current
        staleness = self.staleness()
        confirmed = self._confirmed_wall
        return LiveStatus(
            namespace=self.namespace,
            version=cur.version if cur else 0,
            epoch=cur.epoch if cur else "",
            origin=self.origin,
            connected=self.connected,
            confirmed_at=None if confirmed is None else datetime.fromtimestamp(confirmed, UTC),
            staleness=staleness,
            stale=(
                not self.connected
                or self.lost
                or self.damaged is not None
                or self.rejected is not None
                or staleness > self.stale_after
            ),
            stale_after=self.stale_after,
            lost=self.lost,
            rejected=self.rejected,
            epoch_changes=self.epoch_changes,
            applied=self.applied,
            resyncs=self.resyncs,
            last_error=self.last_error,
            reconnects=self.reconnects,
            deleted=self.deleted,
            digest=cur.digest if cur else "",
            rewinds=self.rewinds,
        )

    # ------------------------------------------------------------ internals

    def _resync(self, reason: str) -> Step:
        """Count and log a re-read; a gap (lost messages) is a warning."""
        self.resyncs += 1
        self.observer.resynced()
        fault = reason.startswith("gap")
        version = self._version()
        log.log(
            logging.WARNING if fault else logging.INFO,
            "%s: re-reading the namespace at version %d: %s",
            self.namespace,
            version,
            reason,
            extra={**self._extra(version, event="gap" if fault else "resync"), "reason": reason},
        )
        return Step("resync", reason)

    def _confirm(self) -> None:
        self._confirmed = self.clock()
        self._confirmed_wall = self.wall()

    def _adopt(
        self,
        epoch: str,
        version: int,
        committed_ms: int,
        schema_rev: int,
        values: Mapping[str, Any],
        variants: VariantSet,
        how: str,
        digest: str = "",
    ) -> Step:
        """Validate and apply a new version, or keep the last good one."""
        now_ms = self.wall() * 1000
        applied_ms = int(now_ms)
        # Redis gives the commit time in whole ms: the lag may read up to 1 ms high
        lag_ms = now_ms - max(committed_ms, self.started_ms)
        # the handles of a process that follow one namespace with one model
        # build the same immutable snapshots: the first builds, the others share
        key = (self.schema.model, self.namespace, epoch, version, digest) if digest else None
        built = _built.get(key) if key is not None else None
        if built is not None and built[0].committed_ms == committed_ms:
            new, merged = built
            view = View(new, merged, applied_ms, lag_ms)
        else:
            try:
                params = self.schema.validate(self.namespace, values)
                new = Snapshot(
                    namespace=self.namespace,
                    version=version,
                    epoch=epoch,
                    params=params,
                    committed_ms=committed_ms,
                    schema_rev=schema_rev,
                    values=frozen_mapping(values),
                    variants=variants,
                    digest=digest,
                )
                view = build_view(self.schema, new, applied_ms, lag_ms)
            except InvalidParams as exc:
                return self._reject(epoch, version, exc, digest)
            if key is not None:
                _remember(key, (new, view.merged))
        old = self.current
        if old is not None and old.epoch != epoch and old.epoch:
            self.epoch_changes += 1
            log.warning(
                "%s: new history (epoch %s -> %s): applying its version %d "
                "in place of version %d (the namespace was recreated)",
                self.namespace,
                old.epoch,
                epoch,
                version,
                old.version,
                extra=self._extra(version, epoch),
            )
        self.current = new
        self.view = view
        self.origin = "redis"
        self.damaged = None
        self.applied += 1
        self._clear_rejection(version)
        self.observer.applied(version, max(0.0, lag_ms) / 1000)
        log_applied(self.namespace, old, new, view, how)
        return Step("apply", how, old, new, view)

    def _reject(self, epoch: str, version: int, exc: InvalidParams, digest: str = "") -> Step:
        previous = self.rejected
        self.rejected = Rejected(epoch, version, str(exc), exc.errors, digest)
        if previous is None or (previous.epoch, previous.version, previous.digest) != (
            epoch,
            version,
            digest,
        ):  # a version refused again (its event, then a re-read of it) counts once
            self.observer.rejected()
        kept = self._version()
        if previous is None or previous.errors != exc.errors:
            log.error(
                "%s: version %d does not fit the model, keeping version %d: %s",
                self.namespace,
                version,
                kept,
                exc,
                extra={
                    **self._extra(version, epoch, event="rejected"),
                    "kept": kept,
                    "fields": sorted(exc.errors),
                },
            )
        return Step("keep", "rejected")

    def _clear_rejection(self, version: int) -> None:
        if self.rejected is not None:
            log.info(
                "%s: version %d fits the model again",
                self.namespace,
                version,
                extra=self._extra(version),
            )
            self.rejected = None

    def _version(self) -> int:
        return self.current.version if self.current else 0

    def _extra(self, version: int, epoch: str | None = None, event: str = "") -> dict[str, Any]:
        if epoch is None:
            epoch = self.current.epoch if self.current else ""
        return extra_of(self.namespace, version, epoch, event)


#: the snapshots built lately in this process, by (model, namespace, epoch,
#: version, content digest): a digest names the content, so a second handle
#: on the same version shares the first one's (validated, immutable) build
_built: dict[Any, tuple[Snapshot[Any], Mapping[str, Snapshot[Any]]]] = {}
#: how many builds are remembered (the newest; a few namespaces' worth)
_BUILT_KEPT = 64


def _remember(key: Any, built: tuple[Snapshot[Any], Mapping[str, Snapshot[Any]]]) -> None:
    _built[key] = built
    while len(_built) > _BUILT_KEPT:
        try:
            del _built[next(iter(_built))]
        except (KeyError, RuntimeError, StopIteration):  # another thread trimmed it
            break
