"""Live handles under faults, against real redis-servers started by the tests.

Every test ends with the same three assertions: every worker serves the
latest version of the latest history within CONVERGE seconds, no reader
ever saw a torn snapshot (``a != b``: the writer always sets both), and no
reader ever saw a version go backwards within one history (epoch).

Workers are processes (multiprocessing, fork), each with one Live handle
and reader threads that check the invariants on every read; they report
to the test through a queue, which keeps working while Redis does not.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Event as EventType
from typing import Any

import pytest

import hotparams
from hotparams.server import LocalRedis

from .models import PairParams
from .proxy import Partitioner

pytestmark = pytest.mark.slow

CTX = multiprocessing.get_context("fork")
NS = "pair"
#: the bound every test states: all workers converge within this many seconds
CONVERGE = 10.0
#: a worker probes every 0.2 s and gives up on a silent reply after 0.5 s
FAST: dict[str, Any] = {
    "reconcile_interval": 0.2,
    "socket_timeout": 0.5,
    "connect_timeout": 0.5,
    "reconnect_base_wait": 0.05,
    "reconnect_max_wait": 0.5,
}


# ---------------------------------------------------------------- worker processes


def worker_main(url: str, reports: Any, stop: EventType, readers: int) -> None:
    bus = hotparams.connect(url, **FAST)
    live = bus.watch(NS, PairParams)
    counts = [[0, 0, 0] for _ in range(readers)]  # reads, torn, backwards per thread

    def read_loop(mine: list[int]) -> None:
        epoch, version = "", -1
        while not stop.is_set():
            for _ in range(200):
                snap = live.current
                params = snap.params
                if params.a != params.b:
                    mine[1] += 1
                if snap.epoch == epoch and snap.version < version:
                    mine[2] += 1
                epoch, version = snap.epoch, snap.version
            mine[0] += 200
            time.sleep(0.001)

    threads = [threading.Thread(target=read_loop, args=(c,), daemon=True) for c in counts]
    for t in threads:
        t.start()

    def report() -> None:
        snap, status = live.current, live.status()
        reports.put(
            {
                "pid": os.getpid(),
                "epoch": snap.epoch,
                "version": snap.version,
                "a": snap.params.a,
                "reads": sum(c[0] for c in counts),
                "torn": sum(c[1] for c in counts),
                "backwards": sum(c[2] for c in counts),
                "connected": status.connected,
                "stale": status.stale,
                "lost": status.lost,
            }
        )

    while not stop.wait(0.05):
        report()
    for t in threads:
        t.join()
    report()
    live.close()
    bus.close()


class Fleet:
    """Worker processes and their latest reports."""

    def __init__(self, url: str, size: int, readers: int = 2) -> None:
        self.reports: Any = CTX.Queue()
        self.stop = CTX.Event()
        self.procs = [
            CTX.Process(target=worker_main, args=(url, self.reports, self.stop, readers))
            for _ in range(size)
        ]
        self.latest: dict[int, dict[str, Any]] = {}
        self.seen: list[dict[str, Any]] = []
        for p in self.procs:
            p.start()
        assert self.wait(lambda r: r["connected"]), self.latest

    def drain(self) -> dict[int, dict[str, Any]]:
        while True:
            try:
                report = self.reports.get_nowait()
            except queue.Empty:
                return self.latest
            self.latest[report["pid"]] = report
            self.seen.append(report)

    def wait(self, check: Any, timeout: float = CONVERGE) -> bool:
        """Until every worker's latest report passes ``check``."""
        deadline = time.monotonic() + timeout
        while True:
            latest = self.drain()
            if len(latest) == len(self.procs) and all(check(r) for r in latest.values()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def converged(self, head: hotparams.Head) -> bool:
        return self.wait(lambda r: (r["epoch"], r["version"]) == (head.epoch, head.version))

    def close(self) -> dict[int, dict[str, Any]]:
        """Stop every worker; their final reports."""
        self.stop.set()
        for p in self.procs:
            p.join(15)
            if p.is_alive():
                p.kill()
                p.join()
        self.drain()
        return self.latest

    def assert_clean(self) -> None:
        final = self.close()
        assert len(final) == len(self.procs)
        for report in final.values():
            assert report["torn"] == 0, report
            assert report["backwards"] == 0, report
            assert report["reads"] > 0, report


@pytest.fixture
def server() -> Iterator[LocalRedis]:
    with LocalRedis() as srv:
        yield srv


def writer(url: str, **settings: Any) -> hotparams.Bus:
    bus = hotparams.connect(url, **settings)
    bus.register(NS, PairParams)
    return bus


# ---------------------------------------------------------------- tests


def test_readers_never_see_a_torn_or_older_version_while_thousands_of_updates_stream(
    server: LocalRedis,
) -> None:
    bus = writer(server.url)
    fleet = Fleet(server.url, size=3)
    try:
        for i in range(1, 3001):
            bus.set(NS, {"a": i, "b": i})
        head = bus.head(NS)
        assert head.version == 3001
        assert fleet.converged(head), fleet.latest
        assert all(r["a"] == 3000 for r in fleet.latest.values())
    finally:
        fleet.assert_clean()
        bus.close()


def stream(bus: hotparams.Bus, stop: threading.Event, written: list[int]) -> None:
    """Write a == b == i for ever-growing i; recreate the namespace when Redis lost it."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            bus.set(NS, {"a": i, "b": i})
            written.append(i)
        except hotparams.NamespaceNotFound:
            with contextlib.suppress(hotparams.HotParamsError):
                bus.register(NS, PairParams, initial={"a": i, "b": i})
        except hotparams.ConnectionFailed:
            time.sleep(0.02)
        time.sleep(0.002)


def test_restarts_without_persistence_in_the_middle_of_a_stream(server: LocalRedis) -> None:
    bus = writer(server.url, retry_deadline=2.0, **FAST)
    fleet = Fleet(server.url, size=3)
    stop = threading.Event()
    written: list[int] = []
    thread = threading.Thread(target=stream, args=(bus, stop, written))
    thread.start()
    try:
        epochs = {bus.head(NS).epoch}
        for _ in range(3):
            time.sleep(0.6)
            server.restart()  # every key and function is gone
            assert wait_head(bus), "the writer did not recreate the namespace"
            epoch = bus.head(NS).epoch
            epochs.add(epoch)
            # each new history is recognised, in spite of its lower version numbers
            assert fleet.wait(lambda r, e=epoch: r["epoch"] == e), fleet.latest
        stop.set()
        thread.join()
        head = bus.head(NS)
        assert len(epochs) == 4 and len(written) > 100
        assert fleet.converged(head), (head, fleet.latest)
        assert all(r["a"] == written[-1] for r in fleet.latest.values())
    finally:
        stop.set()
        thread.join()
        fleet.assert_clean()
        bus.close()


def wait_head(bus: hotparams.Bus, timeout: float = CONVERGE) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(hotparams.HotParamsError):
            bus.head(NS)
            return True
        time.sleep(0.05)
    return False


def test_a_subscriber_dropped_for_an_overflowing_output_buffer_resyncs_by_itself() -> None:
    limits = ["--client-output-buffer-limit", "pubsub 256kb 128kb 1"]
    with LocalRedis(extra=limits) as server:
        bus = hotparams.connect(server.url)
        bus.register(NS, PairParams, retention=5, audit_maxlen=100)
        fleet = Fleet(server.url, size=2)
        log = server.dir / "redis.log"
        victim = fleet.procs[0]
        assert victim.pid is not None
        try:
            os.kill(victim.pid, signal.SIGSTOP)  # it stops reading its subscription
            big = "x" * 8000
            i = 0
            while "output buffer limits" not in log.read_text() and i < 3000:
                for _ in range(50):
                    i += 1
                    bus.set(NS, {"a": i, "b": i, "note": big + str(i)})
            assert "output buffer limits" in log.read_text(), "Redis never dropped it"
            os.kill(victim.pid, signal.SIGCONT)
            v = bus.set(NS, {"a": i + 1, "b": i + 1, "note": "small"})
            assert fleet.converged(bus.head(NS)), fleet.latest
            assert all(r["version"] == v for r in fleet.latest.values())
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim.pid, signal.SIGCONT)
            fleet.assert_clean()
            bus.close()


def test_a_frozen_redis_is_detected_reads_go_on_and_workers_catch_up(
    server: LocalRedis,
) -> None:
    bus = writer(server.url)
    fleet = Fleet(server.url, size=2)
    try:
        v = bus.set(NS, {"a": 1, "b": 1})
        assert fleet.converged(bus.head(NS))
        reads = {pid: r["reads"] for pid, r in fleet.latest.items()}
        server.freeze()  # SIGSTOP: sockets stay open, nothing answers
        try:
            # pub/sub alone would never tell: the reconcile probe does
            assert fleet.wait(lambda r: r["stale"] and not r["connected"], 5), fleet.latest
            time.sleep(0.5)  # longer than the reconcile interval, several times over
            assert fleet.wait(lambda r: r["reads"] > reads[r["pid"]] and r["version"] == v)
        finally:
            server.thaw()
        v = bus.set(NS, {"a": 2, "b": 2})
        assert fleet.converged(bus.head(NS)), fleet.latest
        assert fleet.wait(lambda r: r["connected"] and not r["stale"])
    finally:
        fleet.assert_clean()
        bus.close()


def test_a_partitioned_worker_notices_and_converges_after_the_partition_heals(
    server: LocalRedis,
) -> None:
    bus = writer(server.url)
    proxy = Partitioner(server.port)
    far = hotparams.connect(proxy.url, **FAST)
    live = far.watch(NS, PairParams)
    try:
        v = bus.set(NS, {"a": 1, "b": 1})
        assert live.wait_for(v, CONVERGE) and live.connected
        proxy.partition()
        for i in range(2, 12):
            v = bus.set(NS, {"a": i, "b": i})  # published, never delivered
        deadline = time.monotonic() + CONVERGE
        while not (live.stale and not live.connected) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live.stale and not live.connected  # found out by the reconcile probe
        assert live.current.version < v and live.current.params.a == live.current.params.b
        proxy.heal()
        assert live.wait_for(v, CONVERGE), live.status()
        assert live.current.params.a == 11
        assert wait_for_fresh(live)
    finally:
        live.close()
        far.close()
        proxy.close()
        bus.close()


def wait_for_fresh(live: hotparams.Live[Any]) -> bool:
    deadline = time.monotonic() + CONVERGE
    while time.monotonic() < deadline:
        if live.connected and not live.stale:
            return True
        time.sleep(0.02)
    return False


def test_after_flushall_workers_keep_the_last_good_snapshot_until_it_is_restored(
    server: LocalRedis,
) -> None:
    bus = writer(server.url)
    fleet = Fleet(server.url, size=3)
    try:
        for i in range(1, 31):
            v = bus.set(NS, {"a": i, "b": i})
        head = bus.head(NS)
        assert fleet.converged(head)
        with bus.watch(NS, PairParams, reconcile_interval=0.2) as mine:
            old_epoch = mine.current.epoch
            server.client().flushall()
            assert fleet.wait(lambda r: r["lost"] and r["stale"]), fleet.latest
            # the loss is reported, the last good version is still served: no defaults
            assert all((r["version"], r["a"]) == (v, 30) for r in fleet.latest.values())
            assert mine.wait_until(lambda _: mine.lost, CONVERGE)
            restored = bus.restore(NS, mine.current, author="ops", reason="after FLUSHALL")
        head = bus.head(NS)
        assert restored == head.version == 1 and head.epoch != old_epoch
        assert fleet.converged(head), fleet.latest
        assert all(r["a"] == 30 and not r["lost"] for r in fleet.latest.values())
    finally:
        fleet.assert_clean()
        bus.close()
