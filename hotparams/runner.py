"""One live runner: the loops of a live handle, written once.

A handle (:class:`~hotparams.Live` or :class:`~hotparams.aio.AsyncLive`)
runs two conversations, each a generator free of I/O, and takes part in
two run once per process:

``listener``    :func:`hotparams.follow.follow`: subscribe, read, apply,
                reconcile, and reconnect after any failure (over the
                process's shared subscription, :mod:`hotparams.hub`)
``dispatcher``  :func:`dispatching`: change callbacks in version order, and
                the disk cache, off the listener and the read path
``reporter``    :func:`hotparams.reporting.pumping`, one per process and
                bus: the fleet reports of all its handles, together, their
                A/B exposure counts, and their farewells

Each action names (``verb``) the method of a :class:`Backend` that
performs it; :func:`perform` is the whole dispatch.  The sync handle
implements the methods with threads and blocking calls, the asyncio one
with tasks and ``await``; neither decides anything.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from .follow import Pause, Ping, Publish, Read, Receive, Reset, Status, Subscribe
    from .handle import Handle
    from .snapshot import Snapshot

__all__ = ["EMPTY", "Backend", "Notify", "Store", "Take", "dispatching", "perform"]

#: what Take returns when nothing is queued (and it was not to block)
EMPTY: Any = object()


@dataclass(frozen=True, slots=True)
class Take:
    """The next applied change (``(old, new)``), None once the handle
    closes; with ``block`` False, EMPTY if none is queued."""

    verb: ClassVar[str] = "_take"
    block: bool


@dataclass(frozen=True, slots=True)
class Store:
    """Write ``snap`` to the handle's cache file (off the event loop)."""

    verb: ClassVar[str] = "_store"
    snap: Snapshot[Any]


@dataclass(frozen=True, slots=True)
class Notify:
    """Make one change callback's call (an awaitable result is awaited)."""

    verb: ClassVar[str] = "_notify"
    call: Callable[[], object]


class Backend(Protocol):
    """What a live handle's driver implements: one method per action verb.
    The sync handle's methods block and return the result; the asyncio
    handle's are coroutines.  A method raises
    :class:`~hotparams.driving.Stopped` when the handle closes."""

    # the listener (hotparams.follow)
    def _subscribe(self, action: Subscribe) -> Any: ...
    def _receive(self, action: Receive) -> Any: ...
    def _ping(self, action: Ping) -> Any: ...
    def _read(self, action: Read) -> Any: ...
    def _publish(self, action: Publish) -> Any: ...
    def _pause(self, action: Pause) -> Any: ...
    def _reset(self, action: Reset) -> Any: ...
    def _signal(self, action: Status) -> Any: ...

    # the dispatcher
    def _take(self, action: Take) -> Any: ...
    def _store(self, action: Store) -> Any: ...
    def _notify(self, action: Notify) -> Any: ...


def perform(backend: Backend, action: Any) -> Any:
    """Perform ``action`` with the backend's method of its verb."""
    return getattr(backend, action.verb)(action)


def dispatching(handle: Handle[Any]) -> Generator[Take | Store | Notify, Any, None]:
    """Run the change callbacks of each applied change, in order, and keep
    the cache file at the newest version (written once a burst is over)."""
    unsaved: Snapshot[Any] | None = None
    while True:
        item = yield Take(block=unsaved is None)
        if item is EMPTY:
            assert unsaved is not None
            yield Store(unsaved)
            unsaved = None
            continue
        if item is None:
            break
        old, new = item
        if old is not None:
            for call in handle._listeners(old, new):
                try:
                    yield Notify(call)
                except Exception:  # logged and counted; the other callbacks run
                    handle._callback_failed(old, new)
        if handle.cache is not None:
            unsaved = new
    if unsaved is not None:
        yield Store(unsaved)
