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

import contextlib
import threading
from collections.abc import Generator
from typing import Any, cast

import redis
import redis.asyncio as aredis
from redis.asyncio.client import PubSub as AsyncPubSub
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import MasterNotFoundError as AsyncMasterNotFoundError
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.client import PubSub
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)

from .config import ConfigError, Settings, invalid_url
from .connection import client_options
from .driving import aconverse, converse
from .errors import ConnectionFailed
from .redact import describe, redact_url
from .tls import TlsConnection
from .urls import Topology, check_follow_replicas, parse_topology, topology_kind

__all__ = [
    "async_client",
    "async_follower_client",
    "async_own_client",
    "async_shard_name",
    "async_shard_pubsub",
    "follower_client",
    "interrupt",
    "own_client",
    "shard_name",
    "shard_pubsub",
    "sync_client",
]


class TlsSentinelConnection(SentinelManagedConnection, TlsConnection):
    """A connection to the master a sentinel names, over TLS that fails fast."""


def _is_tls(url: str) -> bool:
    return url.lower().startswith("rediss://")


def _topology(url: str) -> Topology | None:
    kind = topology_kind(url)
    if kind is None:
        return None
    return parse_topology(url)


def _fcall_key(args: tuple[Any, ...]) -> Any:
    """The first key of an ``FCALL``/``FCALL_RO`` (``name numkeys key...``), or None."""
    is_fcall = len(args) > 3 and str(args[0]).upper() in ("FCALL", "FCALL_RO")
    return args[3] if is_fcall and str(args[2]) != "0" else None


class _Cluster(RedisCluster):
    """redis-py's RedisCluster routing an FCALL by its first key, as the
    hotparams library declares it (the namespace): redis-py would first ask
    a node ``COMMAND GETKEYS`` for every FCALL, a round trip per call."""

    def determine_slot(self, *args: Any) -> int | None:
        key = _fcall_key(args)
        if key is not None:
            return int(self.keyslot(key))  # type: ignore[no-untyped-call]
        return super().determine_slot(*args)


class _AsyncCluster(AsyncRedisCluster):
    """As :class:`_Cluster`, for asyncio: redis.asyncio also sends its
    ``COMMAND GETKEYS`` to the node it first learnt of, which keeps failing
    once that node died, even after the slots were asked for again."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        key = _fcall_key((command, *args))
        if key is not None:
            return self.keyslot(key)
        return await super()._determine_slot(command, *args)


def _cluster_options(topology: Topology, settings: Settings) -> dict[str, Any]:
    """Keyword arguments of a RedisCluster: hotparams' client options (the
    core retries, not redis-py), the credentials, TLS.  ``min_replica_acks``
    is refused: redis-py sends a WAIT to every primary, not on the
    connection of the write, so it would count nothing."""
    if settings.min_replica_acks:
        raise ConfigError(
            "min_replica_acks is not supported on a Redis Cluster yet (a WAIT would go to "
            "every primary, not to the namespace's after its write): leave it at 0"
        )
    options: dict[str, Any] = {
        **client_options(settings),
        "username": topology.username,
        "password": topology.password,
    }
    if topology.tls:
        options.update(ssl=True, **topology.tls_options)
    return options


def _cluster_client(url: str, topology: Topology, settings: Settings) -> redis.Redis:
    options = _cluster_options(topology, settings)

    def make() -> redis.Redis:
        nodes = [ClusterNode(host, port) for host, port in topology.nodes]  # type: ignore[no-untyped-call]
        try:  # redis-py asks the seed nodes for the slots at once
            client = _Cluster(startup_nodes=nodes, **options)
        except (redis.RedisError, RedisClusterException) as exc:
            raise ConnectionFailed(redact_url(url), describe(exc, url)) from None
        client.hp_own = make  # type: ignore[attr-defined]  # see own_client
        # a RedisCluster speaks the commands of a redis.Redis; the drivers tell them apart
        return cast(redis.Redis, client)

    return make()


def _async_cluster_client(topology: Topology, settings: Settings) -> aredis.Redis:
    options = _cluster_options(topology, settings)

    def make() -> aredis.Redis:
        nodes = [AsyncClusterNode(host, port) for host, port in topology.nodes]
        client = _AsyncCluster(startup_nodes=nodes, **options)
        client.hp_own = make  # type: ignore[attr-defined]  # see async_own_client
        return cast(aredis.Redis, client)

    return make()


# ---------------------------------------------------------------- connections of its own


def own_client(client: redis.Redis, *, single_connection: bool = False) -> redis.Redis:
    """A client of the same Redis as ``client`` with connections of its own
    (a Live handle's reader and reporter, which close() may cut); with
    ``single_connection``, outside a cluster, one connection taken from
    ``client``'s pool."""
    if isinstance(client, RedisCluster):
        return client.hp_own()
    base = client.connection_pool
    if single_connection:
        return redis.Redis(connection_pool=base, single_connection_client=True)
    pool = redis.ConnectionPool(connection_class=base.connection_class, **base.connection_kwargs)
    return redis.Redis(connection_pool=pool)


def async_own_client(client: aredis.Redis) -> aredis.Redis:
    """As :func:`own_client`, for asyncio (a pool of its own)."""
    if isinstance(client, AsyncRedisCluster):
        return client.hp_own()
    base = client.connection_pool
    pool = aredis.ConnectionPool(connection_class=base.connection_class, **base.connection_kwargs)
    return aredis.Redis(connection_pool=pool)


def interrupt(client: redis.Redis) -> None:
    """Cut ``client``'s connections from another thread (a hanging call
    fails at once); a later call connects again."""
    if isinstance(client, RedisCluster):
        for node in client.get_nodes():
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
        return
    if client.connection is not None:  # a single-connection client
        client.connection.disconnect()  # type: ignore[no-untyped-call]
    else:
        client.connection_pool.disconnect()


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
        return _sentinel_client(topology, settings, master=True)
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
        return _async_sentinel_client(topology, settings, master=True)
    try:
        return aredis.Redis.from_url(url, **client_options(settings))
    except ValueError as exc:
        raise invalid_url(url, exc) from None


# ---------------------------------------------------------------- following from replicas


def _replicas_only(url: str, topology: Topology | None) -> Topology:
    check_follow_replicas(url)
    assert topology is not None
    return topology


def follower_client(url: str, settings: Settings) -> redis.Redis:
    """A client of a replica of the Sentinel service of ``url`` (round robin
    over the replicas the sentinels name; the master when none is up)."""
    return _sentinel_client(_replicas_only(url, _topology(url)), settings, master=False)


def async_follower_client(url: str, settings: Settings) -> aredis.Redis:
    """As :func:`follower_client`, for asyncio."""
    return _async_sentinel_client(_replicas_only(url, _topology(url)), settings, master=False)


def _sentinel_client(topology: Topology, settings: Settings, *, master: bool) -> redis.Redis:
    """The master (or a replica) of a Sentinel service, found through its
    sentinels, and found again on each new connection (after a failover)."""
    options = {
        "connection_class": TlsSentinelConnection if topology.tls else SentinelManagedConnection
    }
    kinds = (_Sentinels, SentinelConnectionPool, _SentinelRedis)
    return cast(redis.Redis, _through_sentinels(topology, settings, master, kinds, options))


def _async_sentinel_client(topology: Topology, settings: Settings, *, master: bool) -> aredis.Redis:
    """As :func:`_sentinel_client`, for asyncio (TLS: SentinelManagedSSLConnection)."""
    options = {"ssl": True} if topology.tls else {}
    kinds = (_AsyncSentinels, AsyncSentinelPool, _AsyncSentinelRedis)
    return cast(aredis.Redis, _through_sentinels(topology, settings, master, kinds, options))


def _through_sentinels(
    topology: Topology,
    settings: Settings,
    master: bool,
    kinds: tuple[Any, Any, Any],
    extra: dict[str, Any],
) -> Any:
    """A client of redis-py's Sentinel classes ``kinds`` (sentinel, pool, client)."""
    sentinel_class, pool_class, client_class = kinds
    sentinel = sentinel_class(
        list(topology.nodes), sentinel_kwargs=_sentinel_options(topology, settings)
    )
    options = {**_master_options(topology, settings), **extra}
    pool = pool_class(topology.service, sentinel, is_master=master, **options)
    client = client_class(connection_pool=pool)
    client.auto_close_connection_pool = True  # close() disconnects the pool
    client.sentinel_manager = sentinel
    return client


# ---------------------------------------------------------------- sharded pub/sub


def shard_pubsub(client: redis.Redis, channel: str) -> PubSub:
    """A pub/sub for ``channel`` (to SSUBSCRIBE): on a cluster, of the node
    serving the channel's slot (as the client last learnt it: after a
    MOVED reply, :func:`refresh_slots`), else of the server itself."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(channel)
        return node.redis_connection.pubsub()
    return client.pubsub()  # type: ignore[no-untyped-call,no-any-return]


async def async_shard_pubsub(
    client: aredis.Redis, channel: str
) -> tuple[AsyncPubSub, aredis.Redis | None]:
    """As :func:`shard_pubsub` for asyncio: redis.asyncio's RedisCluster has
    no pub/sub, so on a cluster this is the pub/sub of a client of its own
    to the node serving the channel's slot, returned beside it (to close
    after the pub/sub); None outside a cluster."""
    if isinstance(client, AsyncRedisCluster):
        await client.initialize()  # it learns its nodes at its first call
        node = client.get_node_from_key(channel)
        pool = aredis.ConnectionPool(
            connection_class=node.connection_class, **node.connection_kwargs
        )
        own = aredis.Redis(connection_pool=pool)
        own.auto_close_connection_pool = True  # aclose() disconnects the pool
        return own.pubsub(), own
    return client.pubsub(), None


def shard_name(client: redis.Redis, channel: str) -> str:
    """Which node serves ``channel`` (its pub/sub is shared by the process's
    handles on that node): a cluster node's name, "" elsewhere."""
    if isinstance(client, RedisCluster):
        return str(client.get_node_from_key(channel).name)
    return ""


async def async_shard_name(client: aredis.Redis, channel: str) -> str:
    if isinstance(client, AsyncRedisCluster):
        await client.initialize()
        return str(client.get_node_from_key(channel).name)
    return ""


def refresh_slots(client: redis.Redis) -> None:
    """Ask the cluster again who serves which slot (after SSUBSCRIBE met a
    MOVED reply or a dead node: a slot migrated, a replica took over);
    nothing elsewhere.  A cluster that cannot answer now is asked at the
    next attempt."""
    if isinstance(client, RedisCluster):
        with contextlib.suppress(redis.RedisError, RedisClusterException, OSError):
            client.nodes_manager.initialize()


async def async_refresh_slots(client: aredis.Redis) -> None:
    if isinstance(client, AsyncRedisCluster):
        with contextlib.suppress(redis.RedisError, RedisClusterException, OSError):
            await client.nodes_manager.initialize()


def _to_front(nodes: list[Any], node: Any) -> None:
    """Move ``node`` to the front of ``nodes`` (the sentinel that answered is
    asked first next time), found by identity at the moment of the move."""
    with _REORDERING:
        if node in nodes:
            i = nodes.index(node)
            nodes[0], nodes[i] = nodes[i], nodes[0]


_REORDERING = threading.Lock()  # held for the swap alone, never across I/O


def _master_of(manager: Any, state: Any, service_name: str) -> tuple[Any, Any] | None:
    """The master's address in a sentinel's answer, or None if it names none."""
    if not state or not manager.check_master_state(state, service_name):
        return None
    forced = getattr(manager, "_force_master_ip", None)
    return (forced if forced is not None else state["ip"]), state["port"]


def _discovery(
    manager: Any, service_name: str, not_found: type[Exception]
) -> Generator[Any, Any, tuple[Any, Any]]:
    """redis-py's master discovery, once for both drivers (driving.converse /
    aconverse perform each yielded sentinel's SENTINEL MASTERS): the walk
    goes over a copy of the list, and the sentinel that answered moves to
    the front where it is now."""
    errors = []
    for sentinel in list(manager.sentinels):
        try:
            masters = yield sentinel
        except (redis.ConnectionError, redis.TimeoutError) as e:
            errors.append(f"{sentinel} - {e!r}")
            continue
        address = _master_of(manager, masters.get(service_name), service_name)
        if address is not None:
            _to_front(manager.sentinels, sentinel)
            return address
    raise not_found(_not_found(service_name, errors))


class _Sentinels(Sentinel):
    """redis-py's Sentinel, safe when several threads discover the master.

    redis-py moves the sentinel that answered to the front by its index in
    ``sentinels`` as it was when the walk began; another discovery that
    reordered the list meanwhile made that swap copy one sentinel over
    another: the list then held one twice and had lost one (fewer sentinels
    tried from then on; on asyncio the lost client's open connections were
    a ResourceWarning).  :func:`_discovery` walks a copy and moves the
    sentinel where it is now."""

    def discover_master(self, service_name: str) -> Any:
        walk = _discovery(self, service_name, MasterNotFoundError)
        return converse(walk, lambda sentinel: sentinel.sentinel_masters())


class _AsyncSentinels(AsyncSentinel):
    """As :class:`_Sentinels`, for the tasks of a loop (one awaits a
    sentinel while another reorders the list)."""

    async def discover_master(self, service_name: str) -> Any:
        walk = _discovery(self, service_name, AsyncMasterNotFoundError)
        return await aconverse(walk, lambda sentinel: sentinel.sentinel_masters())


def _not_found(service_name: str, errors: list[str]) -> str:
    """redis-py's own message for a master no sentinel names."""
    return f"No master found for {service_name!r}" + (f" : {', '.join(errors)}" if errors else "")


class _SentinelRedis(redis.Redis):
    """A master's client that closes its connections to the sentinels too."""

    sentinel_manager: Any = None

    def close(self) -> None:
        super().close()
        # a copy: redis-py reorders the list while another thread discovers the master
        for node in list(getattr(self.sentinel_manager, "sentinels", ())):
            node.close()


class _AsyncSentinelRedis(aredis.Redis):
    """A master's asyncio client that closes its connections to the sentinels too."""

    sentinel_manager: Any = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        # a copy: a discovery of another task may move a sentinel to the
        # front while this awaits (iterating the list itself could close one
        # twice and skip another)
        for node in list(getattr(self.sentinel_manager, "sentinels", ())):
            await node.aclose()
