"""The synchronous Bus: the operations of :class:`~hotparams.core.BusCore`
performed with blocking calls over a redis-py client."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, overload

from pydantic import BaseModel

from .clients import follower_client, sync_client
from .config import Settings, redact_url, settings_from
from .core import BusCore, WatchOptions
from .drivers import perform
from .driving import converse
from .protocol import Op, Wire
from .snapshot import Snapshot

if TYPE_CHECKING:
    import redis

    from .live import Live

__all__ = ["Bus", "connect"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class Bus(BusCore):
    """A connection to one Redis and the parameter namespaces in it.

    Every public method is an operation of :class:`~hotparams.core.BusCore`
    (shared with the asyncio :class:`~hotparams.aio.AsyncBus`), run here
    with blocking calls; only :meth:`get`, :meth:`watch` and :meth:`close`
    are this class's own.
    """

    def __init__(
        self, client: redis.Redis, *, settings: Settings | None = None, url: str = "redis://"
    ) -> None:
        super().__init__(settings, url)
        self.client = client
        self._follower: Bus | None = None

    def __repr__(self) -> str:
        return f"<hotparams.Bus {redact_url(self.url)}>"

    def run(self, op: Op[T]) -> T:
        """Run an operation of :mod:`hotparams.protocol` to its result."""
        return converse(self.serve(op), self.perform)

    def drive(self, wire: Generator[Wire, Any, T]) -> T:
        """Perform calls that need no library check (the library's own)."""
        return converse(wire, self.perform)

    def perform(self, wire: Wire) -> Any:
        return perform(self.client, self.url, wire)

    @overload
    def get(self, namespace: str, model: type[M], *, version: int | None = None) -> Snapshot[M]: ...

    @overload
    def get(
        self, namespace: str, model: None = None, *, version: int | None = None
    ) -> Snapshot[Any]: ...

    def get(
        self, namespace: str, model: type[M] | None = None, *, version: int | None = None
    ) -> Snapshot[Any]:
        """The current (or a retained) version as a :class:`Snapshot`."""
        return self.run(self._get(namespace, model, version))

    def watch(self, namespace: str, model: type[M], **options: Unpack[WatchOptions]) -> Live[M]:
        """A :class:`~hotparams.Live` handle on the namespace, kept current by a listener.

        Returns once it holds a snapshot: the current version, else (Redis
        unreachable or the namespace missing) the version cached at
        ``cache`` by an earlier run, else the model's defaults if
        ``defaults`` is true; else the error is raised.  The handle then
        catches up by itself.  The options are those of
        :class:`~hotparams.core.WatchOptions`.
        """
        from .live import Live

        return Live(self, namespace, self._schema_for_watch(namespace, model), **options)

    def _following(self) -> Bus:
        """The bus a live handle subscribes and reads on: this one, or with
        ``follow_replicas`` a replica's (one per bus, shared by its handles;
        it never loads the library: replicas get it from their master)."""
        if self._follower is None and (settings := self._follower_settings()) is not None:
            client = follower_client(self.url, self.settings)
            self._follower = Bus(client, settings=settings, url=self.url)
        return self._follower or self

    def close(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.close()
        self.client.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(url: str = "redis://127.0.0.1:6379/0", **settings: Any) -> Bus:
    """A :class:`Bus` for the Redis at ``url`` (``redis://``, ``rediss://``, ``unix://``).

    Keyword settings are those of :class:`~hotparams.Settings`; an unknown
    one is a :class:`~hotparams.ConfigError`.  No connection is opened until
    the first call.
    """
    s = settings_from(settings)
    return Bus(sync_client(url, s), settings=s, url=url)
