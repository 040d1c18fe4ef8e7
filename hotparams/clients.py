"""redis-py clients for a URL, sync and asyncio: the one place that turns a
connection URL into a client.

- ``redis://``, ``rediss://``, ``unix://``: redis-py's own forms.
- ``redis+sentinel://`` / ``rediss+sentinel://`` (:mod:`hotparams.urls`):
  a client of the master that the sentinels name.  redis-py's
  SentinelConnectionPool asks the sentinels for the master's address each
  time a connection (pub/sub ones included) is opened, so after a failover
  the next connection goes to the new master; a connection still open to a
  demoted master is dropped at its first READONLY reply.
- ``redis+cluster://`` / ``rediss+cluster://``: redis-py's RedisCluster
  (sync and asyncio) on the seed nodes; it learns the slots' owners from
  them and follows MOVED/ASK redirections.  The drivers
  (:mod:`hotparams.drivers`) send the library's check and load to every
  primary; a Live handle subscribes on the node owning its channel's slot.

Retries are left to hotparams (:mod:`hotparams.connection`); over TLS the
handshake fails fast and says why (:mod:`hotparams.tls`).
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from .config import Settings, invalid_url
from .connection import client_options
from .errors import ConnectionFailed
from .redact import describe, redact_url
from .tls import TlsConnection
from .urls import Topology, parse_topology, topology_kind

__all__ = ["async_client", "sync_client"]


class TlsSentinelConnection(SentinelManagedConnection, TlsConnection):
    """A connection to the master a sentinel names, over TLS that fails fast."""


def _is_tls(url: str) -> bool:
    return url.lower().startswith("rediss://")


def _topology(url: str) -> Topology | None:
    kind = topology_kind(url)
    if kind is None:
        return None
    return parse_topology(url)


def _cluster_options(topology: Topology, settings: Settings) -> dict[str, Any]:
    """Keyword arguments of a RedisCluster: hotparams' client options (the
    core retries, not redis-py), the credentials, TLS."""
    options: dict[str, Any] = {
        **client_options(settings),
        "username": topology.username,
        "password": topology.password,
    }
    if topology.tls:
        options.update(ssl=True, **topology.tls_options)
    return options


def _cluster_client(url: str, topology: Topology, settings: Settings) -> redis.Redis:
    nodes = [ClusterNode(host, port) for host, port in topology.nodes]  # type: ignore[no-untyped-call]
    try:  # redis-py asks the seed nodes for the slots at once
        client = RedisCluster(startup_nodes=nodes, **_cluster_options(topology, settings))
    except (redis.RedisError, RedisClusterException) as exc:
        raise ConnectionFailed(redact_url(url), describe(exc, url)) from None
    # a RedisCluster speaks the commands of a redis.Redis; the drivers tell them apart
    return cast(redis.Redis, client)


def _async_cluster_client(topology: Topology, settings: Settings) -> aredis.Redis:
    nodes = [AsyncClusterNode(host, port) for host, port in topology.nodes]
    client = AsyncRedisCluster(startup_nodes=nodes, **_cluster_options(topology, settings))
    return cast(aredis.Redis, client)


def _master_options(topology: Topology, settings: Settings) -> dict[str, Any]:
    """Keyword arguments of the master's connections."""
    options: dict[str, Any] = {
        **client_options(settings),
        "db": topology.db,
        "username": topology.username,
        "password": topology.password,
    }
    if topology.tls:
        options.update(topology.tls_options)
    return options


def _sentinel_options(topology: Topology, settings: Settings) -> dict[str, Any]:
    """Keyword arguments of the connections to the sentinels: a sentinel
    that does not answer within the connect timeout is skipped for the next."""
    options: dict[str, Any] = {
        **client_options(settings),
        "socket_timeout": min(settings.connect_timeout, settings.socket_timeout),
        "username": topology.sentinel_username,
        "password": topology.sentinel_password,
        "client_name": "hotparams-sentinel",
    }
    if topology.tls:
        options.update(ssl=True, **topology.tls_options)
    return options


def sync_client(url: str, settings: Settings) -> redis.Redis:
    """A redis-py client for ``url``; a malformed URL is a ConfigError."""
    topology = _topology(url)
    if topology is not None and topology.kind == "cluster":
        return _cluster_client(url, topology, settings)
    if topology is not None:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(topology.nodes), sentinel_kwargs=_sentinel_options(topology, settings)
        )
        options = _master_options(topology, settings)
        options["connection_class"] = (
            TlsSentinelConnection if topology.tls else SentinelManagedConnection
        )
        pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
            topology.service, sentinel, **options
        )
        client = _SentinelRedis(connection_pool=pool)
        client.auto_close_connection_pool = True  # close() disconnects the pool
        client.sentinel_manager = sentinel
        return client
    options = client_options(settings)
    if _is_tls(url):
        options["connection_class"] = TlsConnection
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise invalid_url(url, exc) from None


def async_client(url: str, settings: Settings) -> aredis.Redis:
    """A redis.asyncio client for ``url``; a malformed URL is a ConfigError."""
    topology = _topology(url)
    if topology is not None and topology.kind == "cluster":
        return _async_cluster_client(topology, settings)
    if topology is not None:
        sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
            list(topology.nodes), sentinel_kwargs=_sentinel_options(topology, settings)
        )
        options = _master_options(topology, settings)
        if topology.tls:
            options["ssl"] = True  # SentinelManagedSSLConnection
        pool = AsyncSentinelPool(topology.service, sentinel, **options)  # type: ignore[no-untyped-call]
        client = _AsyncSentinelRedis(connection_pool=pool)
        client.auto_close_connection_pool = True  # aclose() disconnects the pool
        client.sentinel_manager = sentinel
        return client
    try:
        return aredis.Redis.from_url(url, **client_options(settings))
    except ValueError as exc:
        raise invalid_url(url, exc) from None


class _SentinelRedis(redis.Redis):
    """A master's client that closes its connections to the sentinels too."""

    sentinel_manager: Any = None

    def close(self) -> None:
        super().close()
        for node in getattr(self.sentinel_manager, "sentinels", ()):
            node.close()


class _AsyncSentinelRedis(aredis.Redis):
    """A master's asyncio client that closes its connections to the sentinels too."""

    sentinel_manager: Any = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for node in getattr(self.sentinel_manager, "sentinels", ()):
            await node.aclose()
