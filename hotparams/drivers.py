"""The two drivers of a bus: they perform the calls of an operation
(:mod:`hotparams.protocol`; retries and decoding are the core's, see
:meth:`hotparams.core.BusCore.serve`) over redis-py, one blocking, one
awaited.  Each is a handful of lines: a command, a pipeline, a scan, a wait.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .connection import error_replies, translated
from .protocol import Batch, Scan, Sleep, Wire

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aredis

__all__ = ["aperform", "perform"]


def perform(client: redis.Redis, url: str, wire: Wire) -> Any:
    """Perform one call (or wait) with blocking I/O."""
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
        return client.execute_command(*wire.command())  # type: ignore[no-untyped-call]


async def aperform(client: aredis.Redis, url: str, wire: Wire) -> Any:
    """Perform one call (or wait), awaited."""
    if isinstance(wire, Sleep):
        await asyncio.sleep(wire.seconds)
        return None
    with translated(url):
        if isinstance(wire, Batch):
            pipe = client.pipeline(transaction=False)
            for call in wire.calls:
                pipe.execute_command(*call.command())
            return error_replies(await pipe.execute(raise_on_error=False))
        if isinstance(wire, Scan):
            found = client.scan_iter(match=wire.pattern, count=1000, _type=wire.kind)
            return [key async for key in found]
        return await client.execute_command(*wire.command())  # type: ignore[no-untyped-call]
