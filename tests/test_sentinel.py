"""Redis Sentinel with real processes: one master, one replica, three
sentinels (tests/sentinel.py), worker processes following a namespace
through a ``redis+sentinel://`` URL while a writer writes every 20 ms, and
the master SIGKILLed.

Pinned: writes succeed again within 10 s of the kill; within 2 s of the
first write after it every worker serves exactly the new master's head,
field by field; no worker's version goes backwards within an epoch except
onto the new master's head when the old one had acknowledged versions the
replica never received (each such step counted in ``rewinds``); redis-cli
edits on the new master reach the workers.  The asyncio bus and handle do
the same (write, follow, failover).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

import hotparams
from hotparams import aio
from hotparams.server import redis_server_binary

from .conftest import need
from .helpers import wait_until
from .models import PairParams
from .sentinel import SERVICE, SentinelGroup
from .test_tls import Pki, pki  # noqa: F401 - the certificates fixture

pytestmark = pytest.mark.slow

CTX = multiprocessing.get_context("fork")
NS = "pair"
#: a failover is seconds of refused connections: short timeouts and backoffs
FAST: dict[str, Any] = {
    "connect_timeout": 0.5,
    "socket_timeout": 0.5,
    "retry_deadline": 0.5,
    "reconcile_interval": 0.2,
    "reconnect_base_wait": 0.05,
    "reconnect_max_wait": 0.5,
    "report_interval": 1.0,
}
#: writes succeed again within this many seconds of the kill
FAILOVER_BUDGET = 10.0
#: every worker serves the new head within this many seconds of the first write after it
CONVERGE_BUDGET = 2.0


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    need(redis_server_binary() is not None, "redis-server (on PATH)")
    with SentinelGroup() as started:
        yield started


# ---------------------------------------------------------------- the fleet


def worker_main(url: str, name: str, folder: str) -> None:
    """A worker process: a Live handle; every applied version appended to
    ``<name>.log``, the served state in ``<name>.json``, until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    bus = hotparams.connect(url, **FAST)
    live = bus.watch(NS, PairParams, worker_name=name)
    log = Path(folder, f"{name}.log")

    def applied(_old: Any, new: Any) -> None:
        with log.open("a") as out:
            out.write(json.dumps([new.epoch, new.version, new.digest]) + "\n")

    live.on_change(applied)
    served: tuple[Any, ...] = ()
    while not stop.wait(0.005):
        snap = live.current
        state = (snap.epoch, snap.version, snap.digest, dict(snap.values))
        if state == served:
            continue
        served = state
        doc = {
            "epoch": snap.epoch,
            "version": snap.version,
            "digest": snap.digest,
            "values": dict(snap.values),
            "rewinds": live.status().rewinds,
        }
        tmp = Path(folder, f"{name}.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, Path(folder, f"{name}.json"))
    live.close()
    bus.close()


class Fleet:
    def __init__(self, url: str, count: int, folder: Path) -> None:
        self.folder = folder
        self.names = [f"w{i}" for i in range(count)]
        self.procs = [
            CTX.Process(target=worker_main, args=(url, name, str(folder))) for name in self.names
        ]
        for proc in self.procs:
            proc.start()

    def states(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in self.names:
            path = self.folder / f"{name}.json"
            if path.exists():
                out[name] = json.loads(path.read_text())
        return out

    def applied(self, name: str) -> list[tuple[str, int, str]]:
        lines = (self.folder / f"{name}.log").read_text().splitlines()
        return [tuple(json.loads(line)) for line in lines]  # type: ignore[misc]

    def serve(self, head: dict[str, Any]) -> bool:
        states = self.states()
        return len(states) == len(self.names) and all(
            (s["epoch"], s["version"], s["digest"], s["values"])
            == (head["epoch"], head["version"], head["digest"], head["values"])
            for s in states.values()
        )

    def close(self) -> None:
        for proc in self.procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()


@dataclass
class Writer:
    """Writes ``a = b = i`` every 20 ms from a thread; records each outcome."""

    bus: hotparams.Bus
    results: list[tuple[float, int | None]] = field(default_factory=list)
    stop_after_success_at: float | None = None
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Writer:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        i = 0
        while not self.stopped.is_set():
            i += 1
            try:
                version: int | None = self.bus.set(NS, {"a": i, "b": i}, author="writer")
            except hotparams.HotParamsError:
                version = None
            now = time.monotonic()
            self.results.append((now, version))
            after = self.stop_after_success_at
            if version is not None and after is not None and now > after:
                self.stopped.set()
            self.stopped.wait(0.02)

    def successes(self, after: float = 0.0) -> list[tuple[float, int]]:
        return [(t, v) for t, v in list(self.results) if v is not None and t > after]


def head_of(port: int) -> dict[str, Any]:
    """The current version of NS on the server at ``port``, as the workers write it."""
    with hotparams.connect(f"redis://127.0.0.1:{port}/0") as bus:
        bus.bind(NS, PairParams)
        snap = bus.get(NS)
        return {
            "epoch": snap.epoch,
            "version": snap.version,
            "digest": snap.digest,
            "values": dict(snap.values),
        }


def check_monotone(applied: list[tuple[str, int, str]], inherited: int, rewinds: int) -> None:
    """Versions only go up within an epoch, but for a step back from a
    version above ``inherited`` (lost in the failover) onto one the new
    master holds; the handle counts each such step."""
    steps_back = 0
    for (e1, v1, _), (e2, v2, _) in itertools.pairwise(applied):
        if e1 == e2 and v2 <= v1:
            assert v1 > inherited, f"went back from {v1} to {v2}, which the new master holds"
            steps_back += 1
    assert steps_back == rewinds


# ---------------------------------------------------------------- the tests


def test_workers_converge_on_the_new_master_after_its_predecessor_is_killed(
    group: SentinelGroup, tmp_path: Path
) -> None:
    url = group.url()
    bus = hotparams.connect(url, **FAST)
    fleet: Fleet | None = None
    writer: Writer | None = None
    try:
        bus.register(NS, PairParams)
        fleet = Fleet(url, 3, tmp_path)
        assert wait_until(lambda: fleet is not None and fleet.serve(head_of(group.master.port)), 15)
        writer = Writer(bus).start()
        assert wait_until(lambda: writer is not None and len(writer.successes()) >= 10, 10)
        old = group.kill_master()  # returns once the process is gone
        killed_at = time.monotonic()
        writer.stop_after_success_at = killed_at
        acknowledged = max(v for t, v in writer.successes() if t <= killed_at)

        assert writer.stopped.wait(FAILOVER_BUDGET + 1)
        first_at, first_version = writer.successes(killed_at)[0]
        assert first_at - killed_at < FAILOVER_BUDGET
        new_port = group.master_port()
        assert new_port is not None and new_port != old.port
        head = head_of(new_port)
        assert head["version"] == first_version
        assert head["values"] == {"a": head["values"]["a"], "b": head["values"]["a"], "note": ""}
        assert wait_until(lambda: fleet is not None and fleet.serve(head), CONVERGE_BUDGET)
        converged = time.monotonic() - first_at

        inherited = first_version - 1
        for name in fleet.names:
            check_monotone(fleet.applied(name), inherited, fleet.states()[name]["rewinds"])

        cli = ["redis-cli", "-p", str(new_port), "FCALL", "hp_set", "1", NS, "a", "777", "b", "777"]
        edited = int(subprocess.run(cli, capture_output=True, text=True, check=True).stdout)
        assert edited == first_version + 1
        assert wait_until(lambda: fleet is not None and fleet.serve(head_of(new_port)), 5)
        assert all(s["values"]["a"] == 777 for s in fleet.states().values())
        print(
            f"\nfailover: first write {first_at - killed_at:.2f} s after the kill, "
            f"workers converged {converged:.2f} s later; versions lost: "
            f"{max(0, acknowledged - inherited)}"
        )
    finally:
        if writer is not None:
            writer.stopped.set()
        if fleet is not None:
            fleet.close()
        bus.close()


def test_an_asyncio_handle_follows_through_sentinel_across_a_failover(
    group: SentinelGroup,
) -> None:
    async def scenario() -> None:
        bus = aio.connect(group.url(), **FAST)
        try:
            await bus.register(NS, PairParams)
            live = await bus.watch(NS, PairParams)
            try:
                version = await bus.set(NS, {"a": 1, "b": 1})
                assert await live.wait_for(version, timeout=5)
                group.kill_master()
                killed_at = time.monotonic()
                while True:
                    try:
                        version = await bus.set(NS, {"a": 2, "b": 2})
                        break
                    except hotparams.ConnectionFailed:
                        assert time.monotonic() - killed_at < FAILOVER_BUDGET
                first_at = time.monotonic()
                assert await live.wait_for(version, timeout=CONVERGE_BUDGET)
                snap = live.current
                assert (snap.params.a, snap.params.b) == (2, 2)
                new_port = group.master_port()
                assert new_port is not None
                head = head_of(new_port)
                assert (snap.epoch, snap.version, snap.digest) == (
                    head["epoch"],
                    head["version"],
                    head["digest"],
                )
                assert time.monotonic() - first_at < CONVERGE_BUDGET
            finally:
                await live.aclose()
        finally:
            await bus.aclose()
        # no connection of ours is left open on any sentinel (one used to be:
        # a ResourceWarning at the loop's end)
        assert wait_until(lambda: our_sentinel_clients(group) == [0] * len(group.sentinel_ports))

    asyncio.run(scenario())


def our_sentinel_clients(group: SentinelGroup) -> list[int]:
    """How many connections of hotparams each sentinel holds."""
    counts = []
    for port in group.sentinel_ports:
        with group.sentinel_client(port) as client:
            listed = client.client_list()
        counts.append(sum(1 for c in listed if c.get("name") == "hotparams-sentinel"))
    return counts


@pytest.mark.parametrize("kind", ["sync", "asyncio"])
def test_concurrent_master_discoveries_keep_every_sentinel(kind: str) -> None:
    """redis-py moves the sentinel that answered to the front by the index it
    had when the walk began: two discoveries at once (a handle and the
    report pump reconnecting in a failover) copied one sentinel over the
    first, which was lost: fewer sentinels tried from then on, and on
    asyncio its open connection a ResourceWarning (the CI failure)."""
    from hotparams.clients import _AsyncSentinels, _Sentinels

    master = {
        SERVICE: {
            "ip": "127.0.0.1",
            "port": 6390,
            "is_master": True,
            "is_sdown": False,
            "is_odown": False,
            "num-other-sentinels": 2,
        }
    }
    both_asked = threading.Barrier(2, timeout=5)

    class Node:
        def __init__(self, name: str, answers: bool) -> None:
            self.name, self.answers = name, answers

        def reply(self) -> dict[str, Any]:
            if not self.answers:
                raise redis.ConnectionError(f"{self.name} is down")
            return master

        def sentinel_masters(self) -> dict[str, Any]:  # the sync walk
            if self.answers:
                both_asked.wait()  # the two threads meet here, then both swap
            return self.reply()

    class AsyncNode(Node):
        async def sentinel_masters(self) -> dict[str, Any]:  # type: ignore[override]
            await asyncio.sleep(0)  # the other task walks meanwhile
            return self.reply()

    node = Node if kind == "sync" else AsyncNode
    nodes = [node("down", False), node("up", True), node("spare", True)]
    if kind == "sync":
        manager: Any = _Sentinels([])
        manager.sentinels = list(nodes)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            found = list(pool.map(lambda _: manager.discover_master(SERVICE), range(2)))
    else:
        manager = _AsyncSentinels([])
        manager.sentinels = list(nodes)

        async def discover_twice() -> list[Any]:
            return list(await asyncio.gather(*(manager.discover_master(SERVICE) for _ in range(2))))

        found = asyncio.run(discover_twice())
    assert found == [("127.0.0.1", 6390)] * 2
    assert sorted(n.name for n in manager.sentinels) == ["down", "spare", "up"]
    assert manager.sentinels[0].name == "up"


def test_closing_an_asyncio_client_closes_every_sentinel_while_another_task_reorders_them() -> None:
    """redis-py's discover_master moves the sentinel that answered to the
    front of the list; a task doing so while aclose() awaited one sentinel
    after another made it close one twice and leave one open."""
    from hotparams.clients import _AsyncSentinelRedis

    closed: list[str] = []

    class Node:
        def __init__(self, name: str) -> None:
            self.name = name

        async def aclose(self) -> None:
            closed.append(self.name)
            if len(closed) == 1:  # meanwhile another task found the master at "b"
                nodes = manager.sentinels
                nodes[0], nodes[1] = nodes[1], nodes[0]
            await asyncio.sleep(0)

    class Manager:
        def __init__(self) -> None:
            self.sentinels = [Node("a"), Node("b"), Node("c")]

    manager = Manager()
    client = _AsyncSentinelRedis(host="127.0.0.1", port=1)
    client.sentinel_manager = manager
    asyncio.run(client.aclose())
    assert sorted(closed) == ["a", "b", "c"]


@pytest.mark.parametrize("acks", [0, 1], ids=["no-wait", "wait-1"])
def test_versions_a_failover_loses_are_undone_on_every_handle_and_wait_names_them(
    group: SentinelGroup, acks: int
) -> None:
    """The replica is frozen and cut off while three writes commit on the
    master, then the master is killed: the promoted replica never received
    them.  The
    handles, which applied them, step back onto the new master's head
    (one rewind each); with ``min_replica_acks=1`` each of the three
    writes raised ReplicationLagging naming its version, and every write
    that returned is on the new master."""
    url = group.url()
    writer = hotparams.connect(url, min_replica_acks=acks, replica_ack_timeout=0.2, **FAST)
    follower = hotparams.connect(url, **FAST)
    handles: list[Any] = []
    try:
        writer.register(NS, PairParams)
        kept = writer.set(NS, {"a": 1, "b": 1}, author="writer")
        handles = [follower.watch(NS, PairParams) for _ in range(2)]
        applied: list[list[int]] = [[], []]
        for log, handle in zip(applied, handles, strict=True):
            handle.on_change(lambda _old, new, log=log: log.append(new.version))
            assert handle.wait_for(kept, timeout=5)

        replica = group.replicas[0]
        replica.freeze()  # and cut from the master: what follows stays in the master alone
        with group.master.client() as master:
            assert master.client_kill_filter(_type="replica") == 1
        lost: list[int] = []
        for i in (2, 3, 4):
            try:
                lost.append(writer.set(NS, {"a": i, "b": i}, author="writer"))
                assert acks == 0, "a write no replica acknowledged returned"
            except hotparams.ReplicationLagging as exc:
                assert acks == 1
                assert (exc.acks, exc.wanted) == (0, 1)
                assert "committed on the master" in str(exc)
                lost.append(exc.version)
        assert lost == [kept + 1, kept + 2, kept + 3]
        assert all(h.wait_for(lost[-1], timeout=5) for h in handles)
        group.kill_master()
        replica.thaw()

        assert wait_until(lambda: group.master_port() == replica.port, FAILOVER_BUDGET)
        head = head_of(replica.port)
        assert (head["version"], head["values"]["a"]) == (kept, 1)  # the three are lost
        for handle in handles:
            assert handle.wait_until(
                lambda snap: (snap.version, snap.digest) == (head["version"], head["digest"]),
                timeout=FAILOVER_BUDGET,
            )
            assert dict(handle.current.values) == head["values"]
            assert handle.status().rewinds == 1
        after = follower.set(NS, {"a": 5, "b": 5}, author="writer")
        assert after == kept + 1  # the new history reuses the lost numbers
        for log, handle in zip(applied, handles, strict=True):
            assert handle.wait_until(lambda snap: snap.params.a == 5, timeout=5)
            # callbacks run off the read path: poll for the last one
            assert wait_until(lambda log=log: log[-3:] == [lost[-1], kept, kept + 1], 5), log
    finally:
        for handle in handles:
            handle.close()
        follower.close()
        writer.close()


def test_the_cli_and_the_flask_extension_take_a_sentinel_url(group: SentinelGroup) -> None:
    """``--url`` and ``HOTPARAMS_URL`` of the CLI, and the Flask extension's
    ``HOTPARAMS_URL``, reach the master through the sentinels."""
    from flask import Flask

    from hotparams.flask import HotParams

    from .test_cli import run_cli

    url = group.url()
    with hotparams.connect(url, **FAST) as bus:
        bus.register(NS, PairParams)
    done = run_cli(url, "set", NS, "a=4", "b=4", "--author", "ops")  # HOTPARAMS_URL
    assert done.code == 0, done.err
    shown = run_cli("redis://127.0.0.1:1/0", "--url", url, "--json", "get", NS)
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["values"] == {"a": 4, "b": 4, "note": ""}

    app = Flask("sentinel-app")
    app.config.update(HOTPARAMS_URL=url, HOTPARAMS_SETTINGS=FAST)
    ext = HotParams(app, namespace=NS, model=PairParams)
    try:
        assert ext.live(app).current.params.a == 4
    finally:
        ext.close(app)


def test_rediss_sentinel_speaks_tls_to_the_sentinels_and_to_the_master(
    pki: Pki,  # noqa: F811 - the fixture of tests/test_tls.py
) -> None:
    """Sentinels, master and replica listen on TLS alone (replication over
    TLS too): a sync bus and handle and an asyncio bus find the master and
    work through rediss+sentinel://."""
    need(redis_server_binary() is not None, "redis-server (on PATH)")
    with SentinelGroup(tls=pki.server) as tls_group:
        url = tls_group.url()
        assert url.startswith("rediss+sentinel://")
        with hotparams.connect(url, **FAST) as bus:
            bus.register(NS, PairParams)
            live = bus.watch(NS, PairParams)
            try:
                version = bus.set(NS, {"a": 1, "b": 1})
                assert live.wait_for(version, timeout=5)
            finally:
                live.close()

        async def scenario() -> int:
            async with aio.connect(url, **FAST) as abus:
                return await abus.set(NS, {"a": 2, "b": 2})

        version = asyncio.run(scenario())
        with tls_group.replicas[0].client() as replica:  # replicated over TLS
            assert wait_until(
                lambda: replica.hget(f"hp:{{{NS}}}:meta", "version") == b"%d" % version
            )
