"""Small helpers shared by tests: dumping a namespace, waiting for a condition."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import redis

from hotparams.keys import keys_for


def _s(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def dump_namespace(
    client: redis.Redis, namespace: str, *, include_fleet: bool = False
) -> dict[str, Any]:
    """Every key of a namespace with its full content, for before/after checks.

    The fleet's keys (worker reports, exposure counts) change on their own
    while Live handles run, so they are left out unless asked for.
    """
    keys = keys_for(namespace)
    fleet = {keys.workers, keys.exposures}
    out: dict[str, Any] = {}
    for key in sorted(_s(k) for k in client.scan_iter(match=keys.pattern)):
        if (key in fleet or key.startswith(keys.workers_info)) and not include_fleet:
            continue
        kind = _s(client.type(key))
        if kind == "hash":
            out[key] = {_s(k): _s(v) for k, v in client.hgetall(key).items()}
        elif kind == "stream":
            out[key] = [
                (_s(i), {_s(k): _s(v) for k, v in f.items()}) for i, f in client.xrange(key)
            ]
        elif kind == "string":
            out[key] = _s(client.get(key))
        elif kind == "zset":
            out[key] = [(_s(m), score) for m, score in client.zrange(key, 0, -1, withscores=True)]
        else:
            out[key] = kind
    return out


def wait_until(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


_HELD: list[socket.socket] = []


def dead_port() -> int:
    """A port of 127.0.0.1 that refuses connections for as long as this
    process lives: bound, never listening, so no other test process (pytest
    workers run side by side) can start a server on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return int(sock.getsockname()[1])
