"""The two drivers of a bus: they perform the calls of an operation
(:mod:`hotparams.protocol`; retries and decoding are the core's, see
:meth:`hotparams.core.BusCore.serve`) over redis-py, one blocking, one
awaited.  Each is a handful of lines: a command, a pipeline, a scan, a command to
every primary (:class:`~hotparams.protocol.Broadcast`), a wait.

On a Redis Cluster (redis-py's ``RedisCluster``, see
:mod:`hotparams.clients`) a command goes to the node of its key (an FCALL's
key is its namespace), a pipeline is split per node and its replies come
back in order, and a scan walks every primary.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from .clients import async_refresh_slots
from .connection import error_replies, translated
from .protocol import Batch, Broadcast, Call, FCall, Scan, Sleep, Transient, Wire

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aredis

__all__ = ["aperform", "perform"]


def perform(client: redis.Redis, url: str, wire: Wire) -> Any:
    """Perform one call (or wait) with blocking I/O."""
    if type(wire) is FCall:  # most calls: no other check
        with translated(url):
            return client.execute_command(*wire.command())  # type: ignore[no-untyped-call]
    if isinstance(wire, Sleep):
        time.sleep(wire.seconds)
        return None
    with translated(url):
        if isinstance(wire, Batch):
            pipe = client.pipeline(transaction=False)
            for call in wire.calls:
                pipe.execute_command(*call.command())  # type: ignore[no-untyped-call]
            return error_replies(pipe.execute(raise_on_error=False))
        if isinstance(wire, Scan):
            return list(client.scan_iter(match=wire.pattern, count=1000, _type=wire.kind))
        if isinstance(wire, Broadcast):
            return [_each(client, node, wire.args) for node in _primaries(client)]
        return client.execute_command(*wire.command())  # type: ignore[no-untyped-call]


def _primaries(client: Any) -> list[Any]:
    """The nodes a Broadcast goes to: every primary of a cluster, else None (the server)."""
    if isinstance(client, RedisCluster | AsyncRedisCluster):
        return list(client.get_primaries())
    return [None]


def _each(client: Any, node: Any, args: tuple[str, ...]) -> Any:
    """One node's reply to a Broadcast, an error reply as ErrorReply."""
    try:
        if node is None:
            return client.execute_command(*args)
        return client.execute_command(*args, target_nodes=node)
    except ResponseError as exc:
        return error_replies([exc])[0]


async def _aeach(client: Any, node: Any, args: tuple[str, ...]) -> Any:
    try:
        if node is None:
            return await client.execute_command(*args)
        return await client.execute_command(*args, target_nodes=node)
    except ResponseError as exc:
        return error_replies([exc])[0]


async def aperform(client: aredis.Redis, url: str, wire: Wire) -> Any:
    """Perform one call (or wait), awaited."""
    if isinstance(wire, Sleep):
        await asyncio.sleep(wire.seconds)
        return None
    try:
        return await _aperform(client, url, wire)
    except Transient:
        # a node died or moved: ask the cluster for the slots again before the
        # core's next try, so that it reaches the promoted replica (redis.asyncio's
        # RedisCluster, its own retries off, is not relied on to do it)
        await async_refresh_slots(client)
        raise


async def _aperform(client: aredis.Redis, url: str, wire: Call) -> Any:
    with translated(url):
        if isinstance(wire, Batch):
            pipe = client.pipeline(transaction=False)
            for call in wire.calls:
                pipe.execute_command(*call.command())
            return error_replies(await pipe.execute(raise_on_error=False))
        if isinstance(wire, Scan):
            found = client.scan_iter(match=wire.pattern, count=1000, _type=wire.kind)
            return [key async for key in found]
        if isinstance(wire, Broadcast):
            if isinstance(client, AsyncRedisCluster):
                await client.initialize()  # it learns its nodes at its first call
            return [await _aeach(client, node, wire.args) for node in _primaries(client)]
        return await client.execute_command(*wire.command())  # type: ignore[no-untyped-call]
