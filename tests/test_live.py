"""Live handles (sync) against a real redis-server and fakeredis."""

from __future__ import annotations

import itertools
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from pydantic import BaseModel

import hotparams
from hotparams import lkg
from hotparams.server import LocalRedis

from .helpers import dead_port, wait_until
from .models import ChatParams, PairParams

ROOT = Path(__file__).resolve().parent.parent
FAST = {"reconcile_interval": 0.2, "socket_timeout": 0.5, "reconnect_base_wait": 0.05}


def live_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hotparams-")]


@pytest.fixture
def pair(bus: hotparams.Bus) -> Iterator[hotparams.Live[PairParams]]:
    bus.register("pair", PairParams)
    live = bus.watch("pair", PairParams, reconcile_interval=0.2)
    yield live
    live.close()


def test_watch_serves_the_current_version_and_follows_every_change(
    bus: hotparams.Bus, pair: hotparams.Live[PairParams]
) -> None:
    assert (pair.current.version, pair.current.params.a) == (1, 0)
    assert pair.connected
    for i in range(1, 21):
        v = bus.set("pair", {"a": i, "b": i})
    assert pair.wait_for(v, timeout=10)
    snap = pair.current
    assert (snap.version, snap.params.a, snap.params.b) == (v, 20, 20)
    assert isinstance(snap.params, PairParams)


def test_a_held_snapshot_keeps_its_version_while_newer_ones_arrive(
    bus: hotparams.Bus, pair: hotparams.Live[PairParams]
) -> None:
    held = pair.current
    v = bus.set("pair", {"a": 7, "b": 7})
    assert pair.wait_for(v)
    assert (held.version, held.params.a) == (1, 0)
    assert pair.current is not held and pair.current.params.a == 7


def test_callbacks_run_in_version_order_and_a_failing_one_stops_nothing(
    bus: hotparams.Bus, pair: hotparams.Live[PairParams], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[int, int]] = []

    def broken(old: hotparams.Snapshot[Any], new: hotparams.Snapshot[Any]) -> None:
        raise RuntimeError("a bug in user code")

    pair.on_change(broken)
    pair.on_change(lambda old, new: seen.append((old.version, new.version)))
    caplog.set_level(logging.ERROR, logger="hotparams.live")
    for i in range(1, 31):
        v = bus.set("pair", {"a": i, "b": i})
    assert wait_until(lambda: bool(seen) and seen[-1][1] == v)
    assert all(old < new for old, new in seen)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(seen))  # no gap, no repeat
    assert pair.callback_errors == len(seen)
    assert "a change callback failed" in caplog.text
    v = bus.set("pair", {"a": 99, "b": 99})  # the listener is still alive
    assert pair.wait_for(v) and wait_until(lambda: seen[-1][1] == v)


def test_a_field_filter_and_the_blinker_signal(
    bus: hotparams.Bus, pair: hotparams.Live[PairParams]
) -> None:
    notes: list[str] = []
    signalled: list[int] = []

    @pair.on_change(fields=["note"])
    def on_note(old: hotparams.Snapshot[Any], new: hotparams.Snapshot[Any]) -> None:
        notes.append(new.params.note)

    def receiver(sender: Any, **kw: Any) -> None:
        assert sender is pair
        signalled.append(kw["new"].version)

    hotparams.live_changed.connect(receiver, sender=pair)
    try:
        bus.set("pair", {"a": 1, "b": 1})
        bus.set("pair", {"note": "hi"})
        v = bus.set("pair", {"a": 2, "b": 2})
        assert wait_until(lambda: bool(signalled) and signalled[-1] == v)
        assert notes == ["hi"]
        with pytest.raises(hotparams.InvalidParams):
            pair.on_change(on_note, fields=["colour"])
        pair.off_change(on_note)
        v = bus.set("pair", {"note": "bye"})
        assert wait_until(lambda: signalled[-1] == v)
        assert notes == ["hi"]
    finally:
        hotparams.live_changed.disconnect(receiver, sender=pair)


def test_a_changed_secret_is_reread_and_served(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    with bus.watch("chat", ChatParams) as live:
        v = bus.set("chat", {"api_key": "sk-rotated", "temperature": 0.3})
        assert live.wait_for(v)
        assert live.current.params.api_key.get_secret_value() == "sk-rotated"
        assert "sk-rotated" not in repr(live.current)


class PairV2(BaseModel):
    """A newer schema of "pair" that lets ``a`` be text: old workers refuse it."""

    a: int | str = 0
    b: int = 0
    note: str = ""


def test_a_version_the_workers_model_refuses_is_not_applied_and_reported(
    bus: hotparams.Bus, pair: hotparams.Live[PairParams], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="hotparams.live")
    good = bus.set("pair", {"a": 5, "b": 5})
    assert pair.wait_for(good)
    writer = hotparams.Bus(bus.client, url=bus.url)
    writer.migrate("pair", PairV2)  # a rule change is a migration
    bad = writer.set("pair", {"a": "five"})
    assert wait_until(lambda: pair.rejected is not None and pair.rejected.version == bad)
    rejected = pair.rejected
    assert rejected is not None and "a" in rejected.errors
    assert pair.current.version < bad and pair.current.params.a == 5
    assert pair.current.version >= good
    assert pair.stale and pair.status().rejected == rejected
    writer.set("pair", {"note": "still bad"})
    fixed = writer.set("pair", {"a": 6})
    assert pair.wait_for(fixed)
    assert pair.rejected is None and pair.current.params.a == 6
    assert caplog.text.count("does not fit the model") == 1


def test_status_reports_connection_and_freshness(pair: hotparams.Live[PairParams]) -> None:
    status = pair.status()
    assert status.connected and not status.stale and not status.lost
    assert status.origin == "redis" and status.version == 1
    assert status.confirmed_at is not None and status.staleness < status.stale_after
    assert wait_until(lambda: pair.staleness < 0.5)  # the reconcile keeps confirming
    assert "pair" in repr(pair)


def test_flushall_keeps_the_last_good_snapshot_and_a_new_history_is_followed(
    bus: hotparams.Bus, pair: hotparams.Live[PairParams]
) -> None:
    v = bus.set("pair", {"a": 3, "b": 3})
    for i in range(4, 10):
        v = bus.set("pair", {"a": i, "b": i})
    assert pair.wait_for(v)
    old_epoch = pair.current.epoch
    bus.client.flushall()
    assert wait_until(lambda: pair.lost)
    assert pair.stale and (pair.current.version, pair.current.params.a) == (v, 9)
    # the namespace recreated from scratch: version numbers restart in a new epoch
    bus.register("pair", PairParams, initial={"a": 1, "b": 1})
    assert wait_until(lambda: pair.current.epoch != old_epoch)
    assert (pair.current.version, pair.current.params.a) == (1, 1)
    assert not pair.lost and pair.status().epoch_changes == 1


def test_restore_writes_a_workers_last_good_snapshot_back(
    bus: hotparams.Bus, pair: hotparams.Live[PairParams]
) -> None:
    v = bus.set("pair", {"a": 42, "b": 42, "note": "good"})
    assert pair.wait_for(v)
    bus.client.flushall()
    assert wait_until(lambda: pair.lost)
    last_good = pair.current
    restored = bus.restore("pair", last_good, author="ops", reason="after FLUSHALL")
    assert restored == 1  # version 1 of a new history
    snap = bus.get("pair", PairParams)
    assert (snap.params.a, snap.params.note) == (42, "good") and snap.epoch != last_good.epoch
    assert wait_until(lambda: pair.current.epoch == snap.epoch)
    assert (pair.current.params.a, pair.lost) == (42, False)
    # into an existing namespace it is an audited new version
    bus.set("pair", {"a": 0, "b": 0})
    again = bus.restore("pair", last_good, reason="undo")
    assert bus.get("pair").params.a == 42
    assert bus.history("pair", limit=1)[0].op == "restore"
    assert pair.wait_for(again)


def test_watch_without_redis_raises_unless_defaults_are_asked_for() -> None:
    bus = hotparams.connect(f"redis://127.0.0.1:{dead_port()}/0", retry_attempts=1, **FAST)
    with pytest.raises(hotparams.ConnectionFailed):
        bus.watch("chat", ChatParams)
    live = bus.watch("chat", ChatParams, defaults=True)
    try:
        assert (live.current.version, live.current.params.temperature) == (0, 0.7)
        assert live.status().origin == "defaults" and live.stale and not live.connected
    finally:
        live.close()
        bus.close()
    assert not live_threads()


def test_close_leaks_no_thread_and_no_connection(redis_url: str) -> None:
    probe = redis.Redis.from_url(redis_url)
    bus = hotparams.connect(redis_url)
    bus.register("pair", PairParams)
    before = len(probe.client_list())
    handles = [bus.watch("pair", PairParams, reconcile_interval=0.2) for _ in range(3)]
    # per handle a listener and callbacks (the listeners read the shared
    # subscription in turn); per process one report pump
    assert len(live_threads()) == 7
    # the process holds one subscription for its handles
    assert sum(1 for c in probe.client_list() if c.get("ssub") == "1") == 1
    assert wait_until(lambda: len(bus.workers("pair")) == 3)  # three handles: three workers
    for live in handles:
        live.close()
        live.close()  # idempotent
    assert not live_threads()
    assert bus.workers("pair") == []  # close() left the fleet
    assert not [c for c in probe.client_list() if c.get("ssub") == "1"]
    bus.close()
    # the server drops a closed connection when it reads the close: poll for it
    # (read at once, it once still listed one: 3 <= 2 failed)
    assert wait_until(lambda: len(probe.client_list()) <= before), probe.client_list()
    assert all(live.closed and not live.connected for live in handles)
    probe.close()


def test_the_cache_file_follows_applied_versions_atomically(
    bus: hotparams.Bus, tmp_path: Path
) -> None:
    bus.register("chat", ChatParams)
    cache = tmp_path / "lkg" / "chat.json"
    with bus.watch("chat", ChatParams, cache=cache) as live:
        assert wait_until(cache.exists)
        for t in (0.1, 0.2, 0.3):
            v = bus.set("chat", {"temperature": t, "api_key": f"sk-{t}"})
        assert live.wait_for(v)
        assert wait_until(lambda: lkg.read(cache)["version"] == v)
    doc = lkg.read(cache)
    assert doc["values"]["temperature"] == 0.3 and doc["values"]["api_key"] == "sk-0.3"
    assert doc["model"] == "tests.models:ChatParams" and doc["secret_fields"] == ["api_key"]
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert [p.name for p in cache.parent.iterdir()] == ["chat.json"]  # no temp file left


@pytest.mark.slow
def test_a_worker_started_while_redis_is_down_serves_its_cache_then_catches_up(
    tmp_path: Path,
) -> None:
    server = LocalRedis(extra=["--appendonly", "yes", "--appendfsync", "always"]).start()
    cache = tmp_path / "chat.json"
    try:
        bus = hotparams.connect(server.url, **FAST)
        bus.register("chat", ChatParams)
        v = bus.set("chat", {"temperature": 1.5})
        with bus.watch("chat", ChatParams, cache=cache) as live:
            assert wait_until(lambda: cache.exists() and lkg.read(cache)["version"] == v)
        server.stop()
        live = bus.watch("chat", ChatParams, cache=cache)  # Redis is down
        try:
            status = live.status()
            assert (status.version, status.origin, status.stale) == (v, "cache", True)
            assert not status.connected and live.current.params.temperature == 1.5
            server.start()  # comes back with its data (append-only file)
            assert wait_until(lambda: live.connected and not live.stale)
            assert live.status().origin == "redis"
            v2 = bus.set("chat", {"temperature": 1.6})
            assert live.wait_for(v2)
        finally:
            live.close()
        bus.close()
    finally:
        server.close()


def test_the_restore_command_writes_a_cache_file_back(redis_url: str, tmp_path: Path) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 1.25, "api_key": "sk-cached"})
    cache = tmp_path / "chat.json"
    with bus.watch("chat", ChatParams, cache=cache):
        assert wait_until(lambda: cache.exists() and lkg.read(cache)["version"] == 2)
    bus.client.flushall()
    env = {**os.environ, "HOTPARAMS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "hotparams", "restore", "chat", "--from-cache", str(cache)]
    shown = subprocess.run([*cmd, "--dry-run", "--json"], env=env, capture_output=True, cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    assert b"sk-cached" not in shown.stdout and b"******" in shown.stdout
    assert orjson.loads(shown.stdout)["values"]["temperature"] == 1.25
    assert bus.client.dbsize() == 0  # a dry run writes nothing
    done = subprocess.run(
        [*cmd, "--author", "ops", "--reason", "lost"], env=env, capture_output=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert b"version 1 restored" in done.stdout
    snap = bus.get("chat", ChatParams)
    assert snap.params.temperature == 1.25 and snap.params.api_key.get_secret_value() == "sk-cached"
    bad = subprocess.run(
        [*cmd[:-1], str(tmp_path / "nope.json")], env=env, cwd=ROOT, capture_output=True
    )
    assert bad.returncode == 2
    assert b"Warning" not in bad.stderr
    bus.close()


def test_close_is_prompt_even_while_redis_is_frozen(private_redis: LocalRedis) -> None:
    bus = hotparams.connect(private_redis.url, reconcile_interval=0.2)  # socket timeout: 5 s
    bus.register("pair", PairParams)
    live = bus.watch("pair", PairParams)
    private_redis.freeze()
    try:
        time.sleep(0.6)  # the reconcile probe now waits for a reply that will not come
        started = time.monotonic()
        live.close()
        assert time.monotonic() - started < 2.0
        assert not live_threads()
        assert live.current.version == 1  # reads never depended on Redis
    finally:
        private_redis.thaw()
        bus.close()
