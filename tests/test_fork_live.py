"""A Live handle made before fork() keeps working in every child process."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import hotparams
from hotparams.server import free_port

from .models import ChatParams

ROOT = Path(__file__).resolve().parent.parent
CTX = multiprocessing.get_context("fork")


def child(live: hotparams.Live[ChatParams], reports: Any) -> None:
    """In a forked child: the inherited handle must get its own listener."""
    listeners = [t for t in threading.enumerate() if t.name.startswith("hotparams-live")]
    inherited = live.current.version
    ready = live.wait_until(lambda _: live.connected, 10)
    reports.put(("ready", os.getpid(), ready, len(listeners), inherited))
    changed = live.wait_until(lambda snap: snap.params.temperature == 1.5, 10)
    reports.put(("changed", os.getpid(), changed, live.current.version, live.status().stale))


def test_a_handle_made_before_fork_follows_changes_in_every_child(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    v = bus.set("chat", {"temperature": 0.5})
    live = bus.watch("chat", ChatParams, reconcile_interval=0.5)
    reports: Any = CTX.Queue()
    procs = [CTX.Process(target=child, args=(live, reports)) for _ in range(3)]
    try:
        for p in procs:
            p.start()
        ready = [reports.get(timeout=20) for _ in procs]
        assert all(r[0] == "ready" and r[2] for r in ready), ready
        assert all(r[3] == 1 and r[4] == v for r in ready)  # one listener each: its own
        v2 = bus.set("chat", {"temperature": 1.5})
        changed = [reports.get(timeout=20) for _ in procs]
        assert {r[1] for r in changed} == {p.pid for p in procs}
        assert all(r[2] and r[3] == v2 and not r[4] for r in changed), changed
        assert live.wait_for(v2)  # the parent's handle is unaffected
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        live.close()
        bus.close()
    assert all(p.exitcode == 0 for p in procs)


def fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.mark.slow
def test_every_gunicorn_preload_worker_serves_the_new_version(
    redis_url: str, tmp_path: Path
) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "HOTPARAMS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "gunicorn.log").open("wb")
    gunicorn = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "--preload",
            "--workers",
            "3",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "3",
            "tests.apps.preload_app:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    pool = ThreadPoolExecutor(9)

    def sample() -> list[dict[str, Any]]:
        return list(pool.map(lambda _: fetch(url), range(9)))

    try:
        deadline = time.monotonic() + 20
        served: dict[int, dict[str, Any]] = {}
        while len(served) < 3:
            assert time.monotonic() < deadline, f"workers did not answer: {served}"
            try:
                served.update({r["pid"]: r for r in sample()})
            except OSError:
                time.sleep(0.1)
        workers = set(served)
        assert all(r["master"] not in workers and r["version"] == 1 for r in served.values())
        v = bus.set("chat", {"temperature": 1.25}, reason="every worker must see this")
        fresh: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + 20
        while set(fresh) != workers:
            assert time.monotonic() < deadline, f"not every worker converged: {fresh}"
            for r in sample():
                if r["version"] == v:
                    assert r["temperature"] == 1.25 and r["connected"]
                    fresh[r["pid"]] = r
    finally:
        pool.shutdown()
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(15)
        except subprocess.TimeoutExpired:
            gunicorn.kill()
            gunicorn.wait()
        log.close()
        bus.close()


FORK_SERVER = """
import multiprocessing, os, sys, threading, time
import hotparams
from hotparams.live import close_all, serve_forks
from tests.models import ChatParams

bus = hotparams.connect(sys.argv[1])
running = bus.watch("chat", ChatParams)      # made before: stops and leaves the fleet
serve_forks()
made = bus.watch("chat", ChatParams)         # made after: reads, never follows
threads = [t.name for t in threading.enumerate() if t.name.startswith("hotparams-")]
print("server", os.getpid(), made.current.version, made.connected, running.connected, threads)

def worker(ready, done):
    assert made.wait_until(lambda _: made.connected, 10)
    deadline = time.monotonic() + 10
    while len(bus.workers("chat")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    ready.put(sorted(w.pid for w in bus.workers("chat")))
    done.get(timeout=20)
    close_all()                               # gunicorn's worker_exit: leave now
    ready.put(sorted(w.pid for w in bus.workers("chat")))

ctx = multiprocessing.get_context("fork")
ready, done = ctx.Queue(), ctx.Queue()
child = ctx.Process(target=worker, args=(ready, done))
child.start()
print("listed", child.pid, ready.get(timeout=20))
done.put(1)
print("after", ready.get(timeout=20))
child.join(10)
"""


def test_a_fork_server_is_no_worker_and_its_children_are(redis_url: str) -> None:
    """gunicorn's master with --preload (hotparams.gunicorn.prepare_master):
    handles made there read once and never report; every forked process
    reports as one worker (two handles each) and leaves when closed."""
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    proc = subprocess.run(
        [sys.executable, "-c", FORK_SERVER, redis_url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in proc.stdout.splitlines()}
    _server, version, made_connected, running_connected, threads = lines["server"].split(maxsplit=4)
    assert (version, made_connected, running_connected, threads) == ("1", "False", "False", "[]")
    child_pid, listed = lines["listed"].split(maxsplit=1)
    assert listed == f"[{child_pid}, {child_pid}]"  # the child's two handles, not the server
    assert lines["after"] == "[]"
    assert bus.workers("chat") == []
    bus.close()
