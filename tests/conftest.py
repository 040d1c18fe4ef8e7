"""Shared fixtures: a private redis-server per session, fakeredis as a second backend.

The suite runs in parallel (pytest-xdist, ``scripts/test``): each worker
process is a session of its own, with its own redis-server on a port the
kernel picked (``LocalRedis`` checks that the server answering is its own).
So a test may flush or restart the session server, but nothing may be shared
between tests through a fixed port, a fixed file or the environment: use
``tmp_path``, ``private_redis``, ``hotparams.server.free_port`` for a server
a test starts and ``tests.helpers.dead_port`` for an address nobody answers.

Set HOTPARAMS_REQUIRE_REDIS=1 (as .ci/run does) to fail instead of skipping
when no redis-server binary is on PATH.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

import hotparams
from hotparams.server import LocalRedis, redis_server_binary

REQUIRE_REDIS = os.environ.get("HOTPARAMS_REQUIRE_REDIS") == "1"


def _bytecode_cache_for_subprocesses() -> None:
    """The Python processes the tests start (console scripts, workers,
    demos) inherit this environment: under ``PYTHONDONTWRITEBYTECODE`` each
    one compiled hotparams from source again (about 30 modules, ~80 ms a
    process).  They write and reuse bytecode in one cache outside the
    checkout instead, shared by the xdist workers and kept between runs
    (``importlib`` writes each file atomically).  A cache the user chose
    (``PYTHONPYCACHEPREFIX``) is kept."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is None:
        return
    default = Path(tempfile.gettempdir()) / f"hotparams-tests-pycache-{os.getuid()}"
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(default))


_bytecode_cache_for_subprocesses()


def need(available: bool, what: str) -> None:
    """Skip a test whose tool is missing on a user's machine; under
    HOTPARAMS_REQUIRE_REDIS=1 (as in .ci/run) fail instead: CI never skips."""
    if available:
        return
    if REQUIRE_REDIS:
        pytest.fail(f"{what} is missing and HOTPARAMS_REQUIRE_REDIS=1")
    pytest.skip(f"{what} is missing")


def _need_redis_server() -> None:
    need(redis_server_binary() is not None, "redis-server (on PATH)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` (seconds each) run first: the workers share
    the quick ones out at the end (xdist's worksteal takes from the back of
    a worker's queue), instead of one worker still running a long test
    alone when everything else is done."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _process_left_as_found() -> Iterator[None]:
    """A test may run after any other in its worker process: it must not leave
    the process changed for the next ones (test_compose once made it a
    gunicorn master, whose live handles stay dormant: later tests saw no
    worker and no applied version)."""
    from hotparams import live

    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    yield
    assert live._fork_server is None, "the test made this process a fork server (serve_forks)"
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") == multiproc, "PROMETHEUS_MULTIPROC_DIR"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """One private redis-server for the session; tests may FLUSHALL it."""
    _need_redis_server()
    server = LocalRedis().start()
    yield server
    server.close()


@pytest.fixture
def private_redis() -> Iterator[LocalRedis]:
    """A redis-server of this test alone, to stop, freeze and restart."""
    _need_redis_server()
    server = LocalRedis().start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> Iterator[str]:
    """The session server's URL, emptied (keys and functions) before the test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    client.function_flush()
    client.close()
    yield redis_server.url


@pytest.fixture(params=["redis", "fakeredis"])
def bus(request: pytest.FixtureRequest) -> Iterator[hotparams.Bus]:
    """A Bus on a real redis-server, then on fakeredis (the second backend)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        b = hotparams.connect(url)
    else:
        server = fakeredis.FakeServer()
        b = hotparams.Bus(fakeredis.FakeRedis(server=server), url="fakeredis://")
    yield b
    b.close()


@pytest.fixture
def raw(bus: hotparams.Bus) -> redis.Redis:
    """The plain client behind ``bus``, for redis-cli style calls and dumps."""
    return bus.client
