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
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from .codec import dumps, loads, model_values
from .errors import HotParamsError, InvalidParams, NamespaceNotFound, ProtocolError
from .protocol import Head, Stored, check_variants_merge
from .schema import ParamSchema
from .snapshot import Snapshot, frozen_mapping
from .variants import VariantSet

__all__ = [
    "Event",
    "LiveStatus",
    "Rejected",
    "Step",
    "Tracker",
    "defaults_snapshot",
    "parse_event",
    "touches",
]

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("hotparams.live")

#: where the served snapshot came from
Origin = Literal["redis", "cache", "defaults"]


@dataclass(frozen=True, slots=True)
class Event:
    """One change message of a namespace's channel (see the README)."""

    namespace: str
    epoch: str
    version: int
    previous: int
    committed_ms: int
    op: str
    schema_rev: int
    changed: Mapping[str, Any]
    removed: tuple[str, ...] = ()
    redacted: tuple[str, ...] = ()
    #: the A/B variants document after the change (JSON text, None: none
    #: left), when ``variants_changed``
    variants: str | None = None
    variants_changed: bool = False


def parse_event(data: bytes | str) -> Event:
    """The :class:`Event` in a channel message, or ProtocolError."""
    try:
        doc = loads(data)
        variants = doc.get("variants")
        return Event(
            namespace=str(doc["ns"]),
            epoch=str(doc["epoch"]),
            version=int(doc["v"]),
            previous=int(doc["prev"]),
            committed_ms=int(doc["ts"]),
            op=str(doc["op"]),
            schema_rev=int(doc["schema"]),
            changed=dict(doc["changed"]),
            removed=tuple(str(n) for n in doc.get("removed", ())),
            redacted=tuple(str(n) for n in doc.get("redacted", ())),
            variants=None if variants is None else dumps(variants),
            variants_changed="variants" in doc,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"malformed change event ({type(exc).__name__})") from None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A stored version the model refused; the handle kept its last good one."""

    epoch: str
    version: int
    reason: str
    errors: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one decision.

    ``apply``: ``new`` replaces ``old``; ``resync``: re-read the current
    version; ``keep``: nothing to publish (confirmed, rejected, older,
    missing); ``ignore``: the input was already superseded.
    """

    action: Literal["apply", "resync", "keep", "ignore"]
    reason: str = ""
    old: Snapshot[Any] | None = None
    new: Snapshot[Any] | None = None


@dataclass(frozen=True, slots=True)
class LiveStatus:
    """How fresh a live handle is, at one moment.

    ``staleness`` is the number of seconds since the handle last confirmed
    that its snapshot was the current one (``inf`` if it never did, e.g.
    when started from the disk cache while Redis was down): no change older
    than that can be missing.  ``stale`` is true when the handle cannot
    vouch for its snapshot: not connected, the namespace is missing in
    Redis, the newest version was rejected, or no confirmation for longer
    than ``stale_after`` seconds.
    """

    namespace: str
    version: int
    epoch: str
    origin: Origin
    connected: bool
    confirmed_at: datetime | None
    staleness: float
    stale: bool
    stale_after: float
    lost: bool
    rejected: Rejected | None
    epoch_changes: int
    applied: int
    resyncs: int
    last_error: str | None


def defaults_snapshot(namespace: str, schema: ParamSchema[M]) -> Snapshot[M]:
    """Version 0 of no history: the model's defaults (InvalidParams if it has required fields)."""
    params = schema.validate(namespace, {})
    return Snapshot(
        namespace=namespace,
        version=0,
        epoch="",
        params=params,
        committed_ms=0,
        schema_rev=0,
        values=frozen_mapping(model_values(params)),
    )


def touches(fields: Collection[str] | None, old: Snapshot[Any] | None, new: Snapshot[Any]) -> bool:
    """Whether a change from ``old`` to ``new`` concerns any of ``fields`` (None: all)."""
    if fields is None or old is None:
        return True
    before, after = old.values, new.values
    return any(before.get(n) != after.get(n) or (n in before) != (n in after) for n in fields)


class Tracker(Generic[M]):
    """The applied snapshot of one namespace and every decision about it.

    Not thread-safe: one listener owns it.  ``current`` is replaced whole,
    never mutated.
    """

    def __init__(
        self,
        namespace: str,
        schema: ParamSchema[M],
        *,
        reconcile_interval: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self.schema = schema
        self.reconcile_interval = reconcile_interval
        self.clock = clock
        self.wall = wall
        self.current: Snapshot[M] | None = None
        self.origin: Origin = "redis"
        self.connected = False
        self.lost = False
        self.rejected: Rejected | None = None
        self.epoch_changes = 0
        self.applied = 0
        self.resyncs = 0
        self.last_error: str | None = None
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
        self.current = snap
        self.origin = origin

    # ------------------------------------------------------------ decisions

    def on_events(self, events: Iterable[Event]) -> Step:
        """Apply a batch of events from the events alone, or say why not."""
        cur = self.current
        if cur is None:
            return self._resync("no snapshot yet")
        fresh: dict[int, Event] = {}
        for event in events:
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
        for event in fresh:
            if event.version != expected or event.previous != expected - 1:
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
            expected += 1
        last = fresh[-1]
        self._confirm()
        return self._adopt(
            last.epoch, last.version, last.committed_ms, last.schema_rev, values, variants, "event"
        )

    def on_stored(self, stored: Stored) -> Step:
        """A whole current version, just read."""
        self.lost = False
        cur = self.current
        if cur is not None and stored.epoch == cur.epoch:
            self._read_version = max(self._read_version, stored.version)
            if stored.version == cur.version:
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
            if stored.version < cur.version:
                log.warning(
                    "%s: Redis reports version %d, older than the applied %d; keeping %d",
                    self.namespace,
                    stored.version,
                    cur.version,
                    cur.version,
                    extra=self._extra(cur.version),
                )
                return Step("keep", "older")
        else:
            self._read_version = stored.version
        self._confirm()
        return self._adopt(
            stored.epoch,
            stored.version,
            stored.committed_ms,
            stored.schema_rev,
            stored.values(),
            VariantSet.from_json(stored.variants),
            "read",
        )

    def on_head(self, head: Head) -> bool:
        """The reconcile probe: True when the stored state must be re-read."""
        self.lost = False
        cur = self.current
        if cur is not None and (head.epoch, head.version) == (cur.epoch, cur.version):
            if self.origin != "redis":
                return True  # let the re-read confirm the cached snapshot
            self._confirm()
            return False
        rejected = self.rejected
        return not (rejected and (head.epoch, head.version) == (rejected.epoch, rejected.version))

    def on_missing(self) -> Step:
        """The namespace is not in Redis (flushed, restarted empty, deleted)."""
        if not self.lost:
            self.lost = True
            cur = self.current
            version = cur.version if cur else 0
            log.error(
                "%s: the namespace is missing in Redis (flushed or restarted empty); "
                "keeping version %d; restore it with Bus.restore",
                self.namespace,
                version,
                extra=self._extra(version),
            )
        return Step("keep", "missing")

    def connection(self, connected: bool, error: BaseException | None = None) -> None:
        if error is not None:
            self.last_error = describe(error)
        if connected == self.connected:
            return
        self.connected = connected
        if connected:
            log.info("%s: listening", self.namespace, extra=self._extra(self._version()))
        else:
            log.warning(
                "%s: connection lost, serving version %d: %s",
                self.namespace,
                self._version(),
                self.last_error,
                extra=self._extra(self._version()),
            )

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
        )

    # ------------------------------------------------------------ internals

    def _resync(self, reason: str) -> Step:
        self.resyncs += 1
        log.debug("%s: re-read: %s", self.namespace, reason, extra=self._extra(self._version()))
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
    ) -> Step:
        """Validate and apply a new version, or keep the last good one."""
        try:
            params = self.schema.validate(self.namespace, values)
            check_variants_merge(self.namespace, self.schema, values, variants)
        except InvalidParams as exc:
            return self._reject(epoch, version, exc)
        old = self.current
        new: Snapshot[M] = Snapshot(
            namespace=self.namespace,
            version=version,
            epoch=epoch,
            params=params,
            committed_ms=committed_ms,
            schema_rev=schema_rev,
            values=frozen_mapping(values),
            variants=variants,
        )
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
        self.origin = "redis"
        self.applied += 1
        self._clear_rejection(version)
        log.debug(
            "%s: applied version %d (%s)", self.namespace, version, how, extra=self._extra(version)
        )
        return Step("apply", how, old, new)

    def _reject(self, epoch: str, version: int, exc: InvalidParams) -> Step:
        previous = self.rejected
        self.rejected = Rejected(epoch, version, str(exc), exc.errors)
        kept = self._version()
        if previous is None or previous.errors != exc.errors:
            log.error(
                "%s: version %d does not fit the model, keeping version %d: %s",
                self.namespace,
                version,
                kept,
                exc,
                extra=self._extra(version, epoch),
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

    def _extra(self, version: int, epoch: str | None = None) -> dict[str, Any]:
        if epoch is None:
            epoch = self.current.epoch if self.current else ""
        return {"namespace": self.namespace, "version": version, "epoch": epoch}


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
