"""redis-py clients for a URL, sync and asyncio: the one place that turns a
connection URL into a client (``redis://``, ``rediss://``, ``unix://``).

Retries are left to hotparams (:mod:`hotparams.connection`); over TLS the
handshake fails fast and says why (:mod:`hotparams.tls`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Settings, invalid_url
from .connection import client_options

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aredis

__all__ = ["async_client", "sync_client"]


def _is_tls(url: str) -> bool:
    return url.lower().startswith("rediss://")


def sync_client(url: str, settings: Settings) -> redis.Redis:
    """A redis-py client for ``url``; a malformed URL is a ConfigError."""
    import redis

    from .tls import TlsConnection

    options: dict[str, Any] = client_options(settings)
    if _is_tls(url):
        options["connection_class"] = TlsConnection
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise invalid_url(url, exc) from None


def async_client(url: str, settings: Settings) -> aredis.Redis:
    """A redis.asyncio client for ``url``; a malformed URL is a ConfigError."""
    import redis.asyncio as aredis

    try:
        return aredis.Redis.from_url(url, **client_options(settings))
    except ValueError as exc:
        raise invalid_url(url, exc) from None
