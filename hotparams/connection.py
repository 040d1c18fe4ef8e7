"""How hotparams talks to redis-py, for the sync and the asyncio drivers
alike: the client options, and redis-py's exceptions as the I/O-free core
reads them (:func:`translated`).

Retries are hotparams' own (:meth:`hotparams.core.BusCore.serve`, waits
of :mod:`hotparams.backoff`), so redis-py's are switched off.
"""

from __future__ import annotations

from typing import Any

from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .config import Settings
from .protocol import ErrorReply, Transient
from .redact import describe

__all__ = ["TRANSIENT", "client_options", "error_replies", "translated"]

#: errors worth another try: the connection, not the request, failed
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``redis.Redis.from_url`` (sync or asyncio)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": "hotparams",
    }
    try:  # redis-py >= 7: its maintenance handshake would double a connect timeout
        from redis.maint_notifications import MaintNotificationsConfig

        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    except ImportError:  # pragma: no cover - older redis-py
        pass
    return options


class translated:
    """redis-py's exceptions as the I/O-free core reads them: an error reply
    becomes :class:`~hotparams.protocol.ErrorReply`, a failed connection
    :class:`~hotparams.protocol.Transient` (its text without passwords).
    A class, not a generator: it wraps every call of a bus."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, ResponseError):
            raise ErrorReply(str(exc), noperm=isinstance(exc, NoPermissionError)) from None
        if isinstance(exc, TRANSIENT):
            raise Transient(describe(exc, self.url)) from None


def error_replies(replies: list[Any]) -> list[Any]:
    """A pipeline's replies, its error replies as ErrorReply."""
    return [
        ErrorReply(str(r), noperm=isinstance(r, NoPermissionError))
        if isinstance(r, ResponseError)
        else r
        for r in replies
    ]
