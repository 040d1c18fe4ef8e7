"""Fleet visibility with real worker processes: each Live handle reports
itself, a killed worker drops out after its expiry, ``hotparams set
--wait`` waits for them all (and fails with exit 7 when one is
partitioned), and each worker's metrics endpoint says what it runs."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import hotparams
from hotparams.fleet import WorkerReport
from hotparams.metrics import Metrics
from hotparams.server import free_port

from .helpers import wait_until
from .models import PairParams
from .proxy import Partitioner
from .test_cli import run_cli

pytestmark = pytest.mark.slow

CTX = multiprocessing.get_context("fork")
NS = "pair"
FAST: dict[str, Any] = {
    "reconcile_interval": 0.2,
    "socket_timeout": 0.5,
    "connect_timeout": 0.5,
    "reconnect_base_wait": 0.05,
    "reconnect_max_wait": 0.5,
}


def worker_main(url: str, name: str, interval: float, port: int) -> None:
    """One worker process: a Live handle and, on ``port``, its metrics, until SIGTERM.

    (Not a multiprocessing Event: setting one waits for every process
    sleeping on it, a SIGKILLed one included.)"""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    metrics = Metrics(CollectorRegistry())
    server, _ = metrics.serve(port, "127.0.0.1")
    bus = hotparams.connect(url, report_interval=interval, **FAST)
    live = bus.watch(NS, PairParams, worker_name=name, metrics=metrics)
    while not stop.wait(0.05):
        pass
    live.close()
    bus.close()
    server.shutdown()


class Workers:
    def __init__(self, url: str, names: list[str], interval: float) -> None:
        self.ports = {name: free_port() for name in names}
        self.procs = {
            name: CTX.Process(target=worker_main, args=(url, name, interval, self.ports[name]))
            for name in names
        }
        for p in self.procs.values():
            p.start()

    def pid(self, name: str) -> int:
        pid = self.procs[name].pid
        assert pid is not None
        return pid

    def close(self) -> None:
        for p in self.procs.values():
            if p.is_alive():
                p.terminate()
        for p in self.procs.values():
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()


@pytest.fixture
def store(redis_url: str) -> Iterator[hotparams.Bus]:
    bus = hotparams.connect(redis_url)
    bus.register(NS, PairParams)
    yield bus
    bus.close()


def on(bus: hotparams.Bus, version: int) -> dict[str, WorkerReport]:
    return {r.name: r for r in bus.workers(NS) if r.version == version}


def metrics_of(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_every_worker_reports_its_version_and_a_killed_one_drops_out(
    store: hotparams.Bus, redis_url: str
) -> None:
    workers = Workers(redis_url, ["w1", "w2", "w3"], interval=0.3)  # reports live 0.9 s
    try:
        assert wait_until(lambda: len(on(store, 1)) == 3, timeout=20), store.workers(NS)
        v = store.set(NS, {"a": 5, "b": 5})
        head = store.head(NS)
        assert wait_until(lambda: len(on(store, v)) == 3, timeout=10), store.workers(NS)
        host = socket.gethostname()
        for name, r in on(store, v).items():
            assert r.id == f"{host}:{workers.pid(name)}:{name}" and (r.host, r.pid) == (
                host,
                workers.pid(name),
            )
            assert (r.epoch, r.committed_ms, r.connected, r.last_error) == (
                head.epoch,
                head.committed_ms,
                True,
                "",
            )
            # same host, same clock: the lag is the real commit-to-applied time
            assert r.lag_ms == pytest.approx(r.applied_ms - r.committed_ms, abs=1)
            assert -5 <= r.lag_ms < 5_000 and r.started_ms <= r.applied_ms
            assert r.confirmed_ms >= r.started_ms
        conv = store.convergence(NS)
        assert conv.complete and conv.on_target == 3 and conv.lag_p99_ms is not None

        # each worker's metrics endpoint parses with prometheus_client's parser
        for name, port in workers.ports.items():
            m = metrics_of(port)
            label = "[('namespace', 'pair')]"
            assert m[f"hotparams_applied_version{label}"] == v, name
            assert m[f"hotparams_connected{label}"] == 1
            assert m[f"hotparams_apply_lag_seconds_count{label}"] == 2  # versions 1 and 2
            assert m[f"hotparams_rejected_snapshots_total{label}"] == 0

        os.kill(workers.pid("w3"), signal.SIGKILL)  # no leave: its report expires by itself
        killed = time.monotonic()
        assert wait_until(lambda: set(on(store, v)) == {"w1", "w2"}, timeout=10)
        assert time.monotonic() - killed < 5
        r = run_cli(redis_url, "set", NS, "a=6", "b=6", "--wait")
        assert (r.code, r.err) == (0, "")
        assert r.out.splitlines()[-1].startswith(f"{NS}: 2/2 workers on v{v + 1}, p50 ")
    finally:
        workers.close()
    assert wait_until(lambda: store.workers(NS) == [])  # the others left on close


def test_set_wait_fails_with_exit_7_while_a_worker_is_partitioned(
    store: hotparams.Bus, redis_url: str
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = Partitioner(port)
    near = Workers(redis_url, ["near"], interval=0.5)
    far = Workers(proxy.url, ["far"], interval=2.0)  # its report lives 6 s
    try:
        assert wait_until(lambda: set(on(store, 1)) == {"near", "far"}, timeout=20)
        proxy.partition()
        r = run_cli(redis_url, "set", NS, "a=1", "b=1", "--wait", "--timeout", "1.5")
        assert r.code == 7, (r.out, r.err)
        assert r.err.startswith("hotparams: error: not every worker applied version 2 of 'pair'")
        assert f":{far.pid('far')}:far (v1" in r.err and ":near" not in r.err
        assert set(on(store, 2)) == {"near"}
        proxy.heal()
        assert wait_until(lambda: set(on(store, 2)) == {"near", "far"}, timeout=15)
        r = run_cli(redis_url, "set", NS, "a=2", "b=2", "--wait", "--timeout", "15")
        assert (r.code, r.err) == (0, "")
        assert r.out.splitlines()[-1].startswith(f"{NS}: 2/2 workers on v3")
    finally:
        near.close()
        far.close()
        proxy.close()


def forked_child(live: hotparams.Live[PairParams]) -> None:
    """In a child forked with the handle: stay until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.05):
        pass
    live.close()


def test_a_handle_made_before_fork_reports_under_each_childs_own_id(
    store: hotparams.Bus, redis_url: str
) -> None:
    bus = hotparams.connect(redis_url, report_interval=0.5, **FAST)
    live = bus.watch(NS, PairParams, worker_name="web")
    procs = [CTX.Process(target=forked_child, args=(live,)) for _ in range(2)]
    try:
        for p in procs:
            p.start()
        v = store.set(NS, {"a": 3, "b": 3})
        pids = {os.getpid(), *(p.pid for p in procs)}
        assert wait_until(
            lambda: {r.pid for r in store.workers(NS) if r.version == v} == pids, timeout=20
        )
        reports = [r for r in store.workers(NS) if r.version == v]
        assert len({r.id for r in reports}) == 3  # three processes, three ids
        assert all(r.id == f"{r.host}:{r.pid}:web" and r.connected for r in reports)
    finally:
        for p in procs:
            p.terminate()
            p.join(10)
        live.close()
        bus.close()
    assert all(p.exitcode == 0 for p in procs)
    assert wait_until(lambda: store.workers(NS) == [])  # each left on close
