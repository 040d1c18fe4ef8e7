"""The values a live handle's tracker reports (I/O-free): its status
(:class:`LiveStatus`), a refused version (:class:`Rejected`), and the
outcome of one decision (:class:`Step`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .errors import Tombstone
from .snapshot import Snapshot
from .views import View

__all__ = ["LiveStatus", "Origin", "Rejected", "Step"]

#: where the served snapshot came from
Origin = Literal["redis", "cache", "defaults"]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A stored version the model refused; the handle kept its last good one."""

    epoch: str
    version: int
    reason: str
    errors: Mapping[str, str]
    #: the refused version's content digest ("" when unknown)
    digest: str = ""


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
    #: with ``apply``: the new snapshot and its merged variants
    view: View[Any] | None = None


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
    #: how often the listener subscribed again after losing its connection
    reconnects: int = 0
    #: the tombstone when the namespace was deleted (``Bus.delete``): the
    #: handle serves its last good snapshot until the namespace is registered
    #: again, then follows the new history
    deleted: Tombstone | None = None
    #: the content digest of the served version ("" when unknown)
    digest: str = ""
    #: how often the handle moved to Redis's state from one Redis does not
    #: hold (a forged event, or versions Redis lost): see Tracker.on_stored
    rewinds: int = 0
