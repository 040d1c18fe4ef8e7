"""Scale: many subscribed handles on one namespace, and what Redis pays for them.

``handles`` asyncio handles (``AsyncLive``, one ``AsyncBus`` per process),
spread over ``processes`` forked processes, all watch one namespace.  Redis
memory and connected clients are read before and after they subscribe;
Redis CPU (``used_cpu_sys`` + ``used_cpu_user``) and commands/s over a window
with no writes; then ``bus.set`` updates one at a time, each timed from the
call to the swap of ``current`` in every handle (``_install`` wrapped, as in
the propagation section), and Redis CPU per update.

Memory per namespace and per retained version: ``used_memory`` before and
after registering N namespaces (one version each), and before and after M
changes of one namespace whose retention keeps them all, next to
``MEMORY USAGE`` of one version hash and of the audit stream per entry.
"""

from __future__ import annotations

import asyncio
import os
import queue
import statistics
import time
from typing import Any

import redis
import redis.asyncio

import hotparams
from hotparams import aio
from hotparams.config import SETTING_CAPS
from hotparams.keys import keys_for

from .common import (
    CTX,
    NS,
    BenchParams,
    command_calls,
    drain,
    idle_load,
    info_number,
    loadavg,
    on_applied,
    redis_cpu_seconds,
    stop_all,
    summary,
    temperature,
    used_memory,
)

MS = 1000.0


def scale_worker(
    url: str, handles: int, reports: Any, stop: Any, settings: dict[str, Any] | None = None
) -> None:
    asyncio.run(_scale_worker(url, handles, reports, stop, settings or {}))


async def _scale_worker(
    url: str, handles: int, reports: Any, stop: Any, settings: dict[str, Any]
) -> None:
    pid = os.getpid()
    bus = aio.connect(url, **settings)
    # redis-py's asyncio pool holds at most 100 connections by default and
    # fails (MaxConnectionsError) rather than waits; every AsyncLive keeps one
    # for its subscription and may have a read and a fleet report in flight
    if hasattr(bus.client, "connection_pool"):
        bus.client.connection_pool.max_connections = 4 * handles + 10
    applied: dict[int, list[float]] = {}

    def record(version: int, at: float) -> None:
        times = applied.setdefault(version, [])
        times.append(at)
        if len(times) == handles:
            reports.put(("applied", pid, version, applied.pop(version)))

    lives = []
    for _ in range(handles):
        live = await bus.watch(NS, BenchParams)
        on_applied(live, record)
        lives.append(live)
    reports.put(("ready", pid, 0, []))
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    for live in lives:
        await live.aclose()
    await bus.aclose()


def applied_times(reports: Any, processes: int, version: int) -> list[float]:
    """When each subscriber of every process got ``version`` (each process
    reports once all its subscribers did), within 30 s."""
    got: list[float] = []
    done = 0
    deadline = time.monotonic() + 30
    while done < processes and time.monotonic() < deadline:
        try:
            kind, _, seen, times = reports.get(timeout=1.0)
        except queue.Empty:
            continue
        if kind == "applied" and seen == version:
            got += times
            done += 1
    return got


def fleet(
    url: str,
    handles: int,
    processes: int,
    updates: int,
    load_seconds: float,
    *,
    probe: str | None = None,
    settings: dict[str, Any] | None = None,
    others: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``probe``: the server whose load is measured (the URL's, or a
    Sentinel master's); ``others``: servers whose CPU per update is
    measured too (the replicas the handles follow)."""
    client = redis.Redis.from_url(probe or url)
    side = [redis.Redis.from_url(u) for u in others]
    bus = hotparams.connect(url)
    bus.register(NS, BenchParams)
    reports: Any = CTX.Queue()
    stop = CTX.Event()
    shares = [
        handles // processes + (1 if i < handles % processes else 0) for i in range(processes)
    ]
    procs = [
        CTX.Process(target=scale_worker, args=(url, n, reports, stop, settings), daemon=True)
        for n in shares
        if n
    ]
    mem0 = used_memory(client)
    clients0 = info_number(client, "clients", "connected_clients")
    started = time.perf_counter()
    try:
        for p in procs:
            p.start()
        ready = 0
        while ready < len(procs):
            if reports.get(timeout=300)[0] == "ready":
                ready += 1
        subscribe_seconds = time.perf_counter() - started
        mem1 = used_memory(client)
        clients1 = info_number(client, "clients", "connected_clients")
        idle = idle_load(client, load_seconds)
        latencies: list[float] = []
        last: list[float] = []
        missing = 0
        load_before = loadavg()
        client.config_resetstat()
        cpu0, t_updates = redis_cpu_seconds(client), time.perf_counter()
        side0 = [redis_cpu_seconds(c) for c in side]
        for i in range(updates):
            t0 = time.time()
            v = bus.set(NS, {"temperature": temperature(i)}, author="bench")
            got = applied_times(reports, len(procs), v)
            missing += handles - len(got)
            latencies += [t - t0 for t in got]
            if got:
                last.append(max(got) - t0)
            time.sleep(0.02)
        update_seconds = time.perf_counter() - t_updates
        cpu_per_update = (redis_cpu_seconds(client) - cpu0) / max(1, updates)
        side_cpu = [
            (redis_cpu_seconds(c) - c0) / max(1, updates) for c, c0 in zip(side, side0, strict=True)
        ]
        calls = command_calls(client)
        load_after = loadavg()
    finally:
        stop.set()
        stop_all(procs, timeout=60)
        drain(reports)
        bus.close()
        client.close()
        for c in side:
            c.close()
    return {
        "others_cpu_ms_per_update": [c * MS for c in side_cpu],
        "handles": handles,
        "processes": len(procs),
        "updates": updates,
        "missing": missing,
        "subscribe_seconds": subscribe_seconds,
        "per_handle_ms": summary(latencies, MS),
        "last_handle_ms": summary(last, MS),
        "redis_memory_fleet_bytes": mem1 - mem0,
        "redis_memory_per_handle_bytes": (mem1 - mem0) / handles,
        "connected_clients": [clients0, clients1],
        "idle_load": idle,
        "redis_cpu_ms_per_update": cpu_per_update * MS,
        "redis_calls_per_update": {cmd: n / max(1, updates) for cmd, n in sorted(calls.items())},
        "update_phase_seconds": update_seconds,
        "loadavg": [load_before, load_after],
    }


def bare_worker(url: str, subscribers: int, channel: str, reports: Any, stop: Any) -> None:
    asyncio.run(_bare_worker(url, subscribers, channel, reports, stop))


async def _bare_worker(url: str, subscribers: int, channel: str, reports: Any, stop: Any) -> None:
    """``subscribers`` bare redis.asyncio subscriptions (one connection each, like a
    handle's): each records when it receives each message."""
    pid = os.getpid()
    client = redis.asyncio.Redis.from_url(url, max_connections=subscribers + 10)
    received: dict[int, list[float]] = {}

    async def listen(pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "smessage":
                continue
            n = int(message["data"].split(b" ", 1)[0])
            times = received.setdefault(n, [])
            times.append(time.time())
            if len(times) == subscribers:
                reports.put(("applied", pid, n, received.pop(n)))

    subs = []
    for _ in range(subscribers):
        pubsub = client.pubsub()
        await pubsub.ssubscribe(channel)
        subs.append(pubsub)
    tasks = [asyncio.create_task(listen(p)) for p in subs]
    reports.put(("ready", pid, 0, []))
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    for t in tasks:
        t.cancel()
    for p in subs:
        await p.aclose()
    await client.aclose()


def bare_fleet(url: str, subscribers: int, processes: int, updates: int) -> dict[str, Any]:
    """The floor of the fleet: the same number of bare subscriptions, spread the
    same way, and a PUBLISH of a message the size of a hotparams event."""
    client = redis.Redis.from_url(url)
    channel = keys_for("bare").channel
    reports: Any = CTX.Queue()
    stop = CTX.Event()
    shares = [
        subscribers // processes + (1 if i < subscribers % processes else 0)
        for i in range(processes)
    ]
    procs = [
        CTX.Process(target=bare_worker, args=(url, n, channel, reports, stop), daemon=True)
        for n in shares
        if n
    ]
    pad = b"x" * 300  # about a hotparams event (ns, versions, epoch, digests, values)
    try:
        for p in procs:
            p.start()
        ready = 0
        while ready < len(procs):
            if reports.get(timeout=300)[0] == "ready":
                ready += 1
        latencies: list[float] = []
        missing = 0
        client.config_resetstat()
        cpu0 = redis_cpu_seconds(client)
        for i in range(updates):
            t0 = time.time()
            client.spublish(channel, b"%d " % i + pad)
            got = applied_times(reports, len(procs), i)
            missing += subscribers - len(got)
            latencies += [t - t0 for t in got]
            time.sleep(0.02)
        cpu_per_publish = (redis_cpu_seconds(client) - cpu0) / max(1, updates)
    finally:
        stop.set()
        stop_all(procs, timeout=60)
        drain(reports)
        client.close()
    return {
        "subscribers": subscribers,
        "updates": updates,
        "missing": missing,
        "per_subscriber_ms": summary(latencies, MS),
        "redis_cpu_ms_per_publish": cpu_per_publish * MS,
    }


def memory(url: str, namespaces: int, versions: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    bus = hotparams.connect(url)
    try:
        bus.register("warmup", BenchParams)  # library loaded, first allocations done
        m0 = used_memory(client)
        for i in range(namespaces):
            bus.register(f"mem-{i}", BenchParams)
        m1 = used_memory(client)
        ns = "mem-versions"
        low = {name: SETTING_CAPS[name][0] for name in ("retention", "audit_maxlen")}
        bus.register(
            ns,
            BenchParams,
            retention=max(low["retention"], versions + 10),
            audit_maxlen=max(low["audit_maxlen"], versions + 10),
        )
        m2 = used_memory(client)
        batch = 100
        for start in range(0, versions, batch):
            bus.set_many(
                [
                    (ns, {"temperature": temperature(start + j)})
                    for j in range(min(batch, versions - start))
                ],
                author="bench",
            )
        m3 = used_memory(client)
        keys = keys_for(ns)
        head = bus.head(ns).version
        sample = [keys.version(v) for v in range(max(1, head - 50), head + 1)]
        version_hash = statistics.median(
            float(client.memory_usage(k, samples=0) or 0) for k in sample
        )
        audit_entries = int(client.xlen(keys.audit))
        audit_bytes = float(client.memory_usage(keys.audit, samples=0) or 0)
        one_ns = sum(
            float(client.memory_usage(k, samples=0) or 0)
            for k in client.scan_iter(match=keys_for("mem-0").pattern)
        )
    finally:
        bus.close()
        client.close()
    return {
        "namespaces": namespaces,
        "per_namespace_bytes": (m1 - m0) / namespaces,
        "per_namespace_memory_usage_bytes": one_ns,
        "versions": versions,
        "per_version_bytes": (m3 - m2) / versions,
        "version_hash_memory_usage_bytes": version_hash,
        "audit_entry_bytes": audit_bytes / max(1, audit_entries),
        "fields": len(BenchParams.model_fields),
    }


def from_replicas(
    handles: int, processes: int, updates: int, load_seconds: float
) -> dict[str, Any] | None:
    """The same fleet on Sentinel (a master, 2 replicas, 3 sentinels): once
    following the master alone, once following the replicas
    (``follow_replicas``): latency, and the master's CPU per change."""
    try:
        from tests.sentinel import SentinelGroup, wait_replicated
    except ImportError:  # run outside the repository
        return None
    with SentinelGroup(replicas=2) as group:
        wait_replicated(group.master, 2)
        master = group.master.url
        replicas = tuple(r.url for r in group.replicas)
        out: dict[str, Any] = {"replica_count": len(replicas)}
        for case, follow in (("primary", False), ("replicas", True)):
            out[case] = fleet(
                group.url(),
                handles,
                processes,
                updates,
                load_seconds,
                probe=master,
                settings={"follow_replicas": follow},
                others=replicas,
            )
            time.sleep(0.5)
        return out


def run(url: str, *, quick: bool, handles: int = 1000, processes: int = 4) -> dict[str, Any]:
    updates = 15 if quick else 60
    # the idle window outlasts the reconcile interval (5 s): every handle probes once in it
    out = {"fleet": fleet(url, handles, processes, updates, 5.5)}
    time.sleep(0.5)  # disconnected clients' buffers are freed
    out["bare"] = bare_fleet(url, handles, processes, updates)
    time.sleep(0.5)
    out["memory"] = memory(url, 200 if quick else 1000, 500 if quick else 2000)
    replicated = from_replicas(handles, processes, updates, 1.0)
    if replicated is not None:
        out["from_replicas"] = replicated
    return out
