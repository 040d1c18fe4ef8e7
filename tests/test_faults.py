"""Redis restarts, lost functions, outages and a frozen server, for writers."""

from __future__ import annotations

import time

import pytest

import hotparams
from hotparams.server import LocalRedis

from .models import ChatParams


def test_lost_functions_are_reloaded_transparently(private_redis: LocalRedis) -> None:
    bus = hotparams.connect(private_redis.url)
    bus.register("chat", ChatParams)
    private_redis.client().function_flush()  # what a restart without persistence does
    assert bus.set("chat", {"temperature": 0.2}) == 2
    assert bus.get("chat").params.temperature == 0.2
    bus.close()


@pytest.mark.slow
def test_a_restart_without_persistence_is_recovered(private_redis: LocalRedis) -> None:
    bus = hotparams.connect(private_redis.url)
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 0.2})
    private_redis.restart()  # keys and functions are gone
    with pytest.raises(hotparams.NamespaceNotFound):
        bus.set("chat", {"temperature": 0.3})
    result = bus.register("chat", ChatParams)  # the same Bus, no reconnect by hand
    assert (result.version, result.created) == (1, True)
    assert bus.set("chat", {"temperature": 0.3}) == 2
    bus.close()


@pytest.mark.slow
def test_an_outage_is_one_clear_error_after_bounded_retries(private_redis: LocalRedis) -> None:
    bus = hotparams.connect(private_redis.url, retry_attempts=4, retry_max_wait=0.2)
    bus.register("chat", ChatParams)
    private_redis.stop()
    started = time.monotonic()
    with pytest.raises(hotparams.ConnectionFailed) as info:
        bus.set("chat", {"temperature": 0.3})
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    assert str(private_redis.port) in str(info.value)
    private_redis.start()
    bus.register("chat", ChatParams)
    assert bus.set("chat", {"temperature": 0.3}) == 2
    bus.close()


@pytest.mark.slow
def test_a_frozen_server_times_out_then_recovers(private_redis: LocalRedis) -> None:
    bus = hotparams.connect(
        private_redis.url, socket_timeout=0.3, retry_attempts=2, retry_deadline=2
    )
    bus.register("chat", ChatParams)
    private_redis.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(hotparams.ConnectionFailed):
            bus.get("chat")
        assert time.monotonic() - started < 5
    finally:
        private_redis.thaw()
    assert bus.get("chat").version == 1
    bus.close()


def test_a_password_never_appears_in_errors_or_reprs() -> None:
    bus = hotparams.connect(
        "redis://user:hunter2@127.0.0.1:1/0", retry_attempts=1, connect_timeout=0.2
    )
    assert "hunter2" not in repr(bus)
    with pytest.raises(hotparams.ConnectionFailed) as info:
        bus.head("chat")
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)
