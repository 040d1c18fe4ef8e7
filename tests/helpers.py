"""Small helpers shared by tests: dumping a namespace, waiting for a condition."""

from __future__ import annotations

import io
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
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


def run_in_process(
    argv: list[str],
    *,
    env: Mapping[str, str | None],
    cwd: Path,
    stdin: str = "",
    merged: bool = False,
) -> tuple[int, str, str]:
    """``hotparams ARGV`` in this process: exit code, stdout, stderr.

    What the console script runs (``hotparams.cli.app.run``), with the
    variables of ``env`` set (None: unset), ``cwd`` as working directory and ``stdin`` as
    standard input for the call, then everything put back.  The streams are
    UTF-8 text streams that are not terminals, like a subprocess's pipes
    (``merged``: stderr written into stdout, as ``2>&1``; stderr is then "").
    The OS user is read once per process (``default_author``): the call
    reads it anew from ``env``.
    A CLI process costs a test half a second or more (interpreter start and
    imports), a call here a few milliseconds.
    """
    from hotparams.cli.app import run
    from hotparams.protocol import default_author

    saved_env = {name: os.environ.get(name) for name in env}
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_cwd = os.getcwd()
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    streams = (
        io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8"),
        stdout,
        stdout if merged else io.TextIOWrapper(err, encoding="utf-8", write_through=True),
    )
    sys.stdin, sys.stdout, sys.stderr = streams
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.chdir(cwd)
    default_author.cache_clear()
    try:
        try:
            code = run(argv)
        except SystemExit as exc:  # what a process would exit with
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        for stream in streams[1:]:
            stream.flush()
        output = out.getvalue().decode(), err.getvalue().decode()
    finally:
        default_author.cache_clear()
        os.chdir(saved_cwd)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        sys.stdin, sys.stdout, sys.stderr = saved_streams
    return code, *output
