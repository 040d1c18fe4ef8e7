"""Propagation: from a change to every worker process, next to the floor and to polling.

For each fleet size K (1, 16, 64) the run forks K hotparams workers (one sync
``Live`` each) and K bare redis-py subscribers of a channel of their own,
all alive at once, then alternates: a ``bus.set`` whose version every Live
worker must apply, a plain ``SPUBLISH`` (sharded, as hotparams' events)
of a message of the same size that every bare subscriber must receive
(the order swaps every update).  Each worker timestamps with ``time.time()`` on the same host:

- a Live worker when the listener swapped ``current`` (the moment a reader
  sees the new value; the handle's ``_publish`` is wrapped for this) and when
  its ``on_change`` callback runs;
- a bare subscriber when ``get_message`` returned the message.

Latency is measured from the moment the parent calls ``bus.set`` /
``publish``; ``bus.set`` includes the client-side validation and the Lua
function, reported separately.  Before the updates, a window with no writes
measures the Redis load of the idle fleet (commands/s, by command, from
INFO commandstats).

Then the lag the workers report themselves (``applied_ms - committed_ms`` in
their fleet reports, commit time by Redis's clock), as ``bus.convergence``
summarises it: a few more updates, each once every Live worker reported it
(reports are debounced, so these are not timed above): the median over
updates of its p50 and p99, and the p50/p99 of every report pooled.

Polling peers: K_poll processes read the parameter through django-constance's
``CachingRedisBackend`` with a TTL of 1 s, then 100 ms (a read every 2 ms, as
a busy worker would; without the ``bench`` extra, a plain GET every interval).
The parent changes the value at random moments through constance's
``RedisBackend``; staleness is the time from that write to each poller
seeing the new value; their Redis load is measured as above.
"""

from __future__ import annotations

import os
import queue
import random
import statistics
import time
from typing import Any

import redis

import hotparams
from hotparams.keys import keys_for

from . import peers
from .common import (
    CTX,
    NS,
    BenchParams,
    command_calls,
    drain,
    idle_load,
    loadavg,
    on_applied,
    pct,
    ratio,
    stop_all,
    summary,
    temperature,
)

BARE_CHANNEL = "bench:bare"
#: updates whose fleet-reported lag is read (each waits for every report)
CONVERGENCE_UPDATES = 10
PLAIN_KEY = "bench:polled"
POLL_READ_EVERY = 0.002
MS = 1000.0
BLOCKS = 5


# ---------------------------------------------------------------- worker processes


def live_worker(url: str, reports: Any, go: Any, timed: Any, stop: Any) -> None:
    bus = hotparams.connect(url)
    live = bus.watch(NS, BenchParams)
    pid = os.getpid()
    swapped: dict[int, float] = {}
    on_applied(live, swapped.__setitem__)

    def on_change(old: Any, new: Any) -> None:
        now = time.time()
        reports.put(("live", pid, new.version, swapped.pop(new.version, now), now))

    live.on_change(on_change)
    reports.put(("ready", pid, 0, 0.0, 0.0))
    go.wait()
    cpu = time.process_time()
    timed.wait()
    reports.put(("cpu", pid, "live", time.process_time() - cpu, 0.0))
    stop.wait()
    live.close()
    bus.close()


def bare_worker(url: str, reports: Any, go: Any, timed: Any, stop: Any) -> None:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    pubsub.ssubscribe(BARE_CHANNEL)
    while True:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "ssubscribe":
            break
    pid = os.getpid()
    reports.put(("ready", pid, 0, 0.0, 0.0))
    cpu = None
    reported = False
    while not stop.is_set():
        if cpu is None and go.is_set():
            cpu = time.process_time()
        if not reported and timed.is_set():
            reports.put(("cpu", pid, "bare", time.process_time() - (cpu or 0.0), 0.0))
            reported = True
        message = pubsub.get_message(timeout=0.1)
        if message is None or message["type"] != "smessage":
            continue
        now = time.time()
        seq = int(message["data"].split(b"|", 1)[0])
        reports.put(("bare", pid, seq, now, now))
    pubsub.close()
    client.close()


def poller(url: str, interval: float, reports: Any, stop: Any, constance: bool) -> None:
    if constance:
        config = peers.config(url, cached=True, ttl=interval)

        def read() -> Any:
            return config.TEMPERATURE

        tick = POLL_READ_EVERY
    else:
        client = redis.Redis.from_url(url)

        def read() -> Any:
            value = client.get(PLAIN_KEY)
            return float(value) if value is not None else None

        tick = interval
    pid = os.getpid()
    last = read()
    reports.put(("ready", pid, 0, 0.0, 0.0))
    while not stop.is_set():
        value = read()
        if value != last:
            reports.put(("poll", pid, int(value), time.time(), 0.0))
            last = value
        time.sleep(tick)


# ---------------------------------------------------------------- helpers


def wait_ready(reports: Any, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    ready = 0
    while ready < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{count - ready} of {count} workers did not start")
        kind = reports.get(timeout=left)[0]
        if kind == "ready":
            ready += 1


def collect(
    reports: Any, kind: str, key: int, count: int, timeout: float
) -> list[tuple[float, float]]:
    """The (applied, callback) times of ``count`` reports of ``kind`` for ``key``."""
    got: dict[int, tuple[float, float]] = {}
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            k, pid, version, at, cb = reports.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if k == kind and version == key:
            got[pid] = (at, cb)
    return list(got.values())


def worker_cpu(reports: Any, count: int, timeout: float = 30.0) -> dict[str, list[float]]:
    """CPU seconds each worker used over the timed updates (from ``go`` to ``timed``), by kind."""
    out: dict[str, list[float]] = {}
    deadline = time.monotonic() + timeout
    got = 0
    while got < count and time.monotonic() < deadline:
        try:
            kind, _, tag, seconds, _ = reports.get(timeout=1.0)
        except queue.Empty:
            continue
        if kind == "cpu":
            out.setdefault(tag, []).append(seconds)
            got += 1
    return out


def event_size(url: str) -> int:
    """Bytes of one hotparams change event for a one-field change (to size the bare message)."""
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    pubsub.ssubscribe(keys_for(NS).channel)
    pubsub.get_message(timeout=1.0)
    bus = hotparams.connect(url)
    bus.set(NS, {"temperature": 0.42})
    size = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "smessage":
            size = len(message["data"])
            break
    pubsub.close()
    client.close()
    bus.close()
    return size


def p99_ratio_blocks(per_update: dict[str, list[list[float]]], blocks: int) -> list[float]:
    """The p99 ratio live / bare of each of ``blocks`` consecutive runs of updates (its spread)."""
    n = min(len(per_update["live"]), len(per_update["bare"]))
    size = max(1, n // blocks)
    out = []
    for start in range(0, size * blocks, size):
        live = [x for u in per_update["live"][start : start + size] for x in u]
        bare = [x for u in per_update["bare"][start : start + size] for x in u]
        if live and bare:
            out.append(ratio(pct(live, 0.99), pct(bare, 0.99)))
    return out


# ---------------------------------------------------------------- one fleet size


def fleet(url: str, k: int, updates: int, load_seconds: float) -> dict[str, Any]:
    reports: Any = CTX.Queue()
    go, timed, stop = CTX.Event(), CTX.Event(), CTX.Event()
    procs = []
    signals = (url, reports, go, timed, stop)
    for _ in range(k):  # started alternately: neither kind gets the warmer CPU caches
        procs.append(CTX.Process(target=live_worker, args=signals, daemon=True))
        procs.append(CTX.Process(target=bare_worker, args=signals, daemon=True))
    bus = hotparams.connect(url)
    bus.register(NS, BenchParams)
    pad = "x" * max(0, event_size(url) - 8)
    client = redis.Redis.from_url(url)
    try:
        for p in procs:
            p.start()
        wait_ready(reports, 2 * k)
        load = idle_load(client, load_seconds) if load_seconds else None
        load_before = loadavg()
        samples: dict[str, list[float]] = {"live": [], "live_callback": [], "bare": []}
        per_update: dict[str, list[list[float]]] = {"live": [], "bare": []}
        last: dict[str, list[float]] = {"live": [], "bare": []}
        paired: list[float] = []
        set_cost: list[float] = []
        publish_cost: list[float] = []
        missing = {"live": 0, "bare": 0}
        client.config_resetstat()
        go.set()
        time.sleep(0.15)  # every worker has taken its CPU reading
        for i in range(updates):
            this: dict[str, float] = {}
            for kind in ("live", "bare") if i % 2 == 0 else ("bare", "live"):
                t0 = time.time()
                if kind == "live":
                    key = bus.set(NS, {"temperature": temperature(i)}, author="bench")
                    set_cost.append(time.time() - t0)
                else:
                    key = i
                    client.spublish(BARE_CHANNEL, f"{i:07d}|{pad}")
                    publish_cost.append(time.time() - t0)
                got = collect(reports, kind, key, k, timeout=10.0)
                missing[kind] += k - len(got)
                per_update[kind].append([at - t0 for at, _ in got])
                samples[kind] += per_update[kind][-1]
                if kind == "live":
                    samples["live_callback"] += [cb - t0 for _, cb in got]
                if got:
                    this[kind] = max(at for at, _ in got) - t0
                    last[kind].append(this[kind])
                time.sleep(random.uniform(0.005, 0.015))
            if len(this) == 2:
                paired.append(this["live"] / this["bare"])
        load_after = loadavg()
        calls = command_calls(client)
        timed.set()
        cpu = worker_cpu(reports, 2 * k)
        reported = reported_lag(bus, k, updates, CONVERGENCE_UPDATES)
        stop.set()
    finally:
        go.set()
        timed.set()
        stop.set()
        stop_all(procs)
        drain(reports)
        bus.close()
        client.close()
    live_w, bare_w = summary(samples["live"], MS), summary(samples["bare"], MS)
    live_l, bare_l = summary(last["live"], MS), summary(last["bare"], MS)
    return {
        "workers": k,
        "updates": updates,
        "message_bytes": len(pad) + 8,
        "missing": missing,
        "live_per_worker_ms": live_w,
        "live_callback_per_worker_ms": summary(samples["live_callback"], MS),
        "bare_per_worker_ms": bare_w,
        "live_last_worker_ms": live_l,
        "bare_last_worker_ms": bare_l,
        "ratio_per_worker_p50": ratio(live_w["p50"], bare_w["p50"]),
        "ratio_per_worker_p99": ratio(live_w["p99"], bare_w["p99"]),
        "ratio_last_worker_p50": ratio(live_l["p50"], bare_l["p50"]),
        "ratio_last_worker_p99": ratio(live_l["p99"], bare_l["p99"]),
        "ratio_last_worker_paired_p50": statistics.median(paired) if paired else float("nan"),
        "ratio_per_worker_p99_blocks": p99_ratio_blocks(per_update, BLOCKS),
        "worker_cpu_ms_per_update": {
            kind: summary([c / updates for c in values], MS) for kind, values in cpu.items()
        },
        "redis_calls_per_update": {cmd: n / updates for cmd, n in sorted(calls.items())},
        "bus_set_ms": summary(set_cost, MS),
        "publish_ms": summary(publish_cost, MS),
        "idle_load": load,
        "loadavg": [load_before, load_after],
        "reported_lag_ms": reported,
    }


def reported_lag(bus: hotparams.Bus, k: int, first: int, updates: int) -> dict[str, Any]:
    """What the fleet reports: ``bus.convergence`` once all ``k`` workers reported each update."""
    p50: list[float] = []
    p99: list[float] = []
    pooled: list[float] = []
    incomplete = 0
    for i in range(first, first + updates):
        v = bus.set(NS, {"temperature": temperature(i)}, author="bench")
        deadline = time.monotonic() + 10
        while True:
            conv = bus.convergence(NS, v)
            if (conv.complete and conv.workers == k) or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if not (conv.complete and conv.workers == k):
            incomplete += 1
            continue
        p50.append(conv.lag_p50_ms or 0.0)
        p99.append(conv.lag_p99_ms or 0.0)
        pooled += [r.lag_ms for r in bus.workers(NS) if r.version == v]
    return {
        "updates": updates,
        "incomplete": incomplete,
        "convergence_p50_median": statistics.median(p50) if p50 else float("nan"),
        "convergence_p99_median": statistics.median(p99) if p99 else float("nan"),
        "pooled": summary(pooled),
    }


# ---------------------------------------------------------------- pollers


def polling(url: str, k: int, interval: float, writes: int, load_seconds: float) -> dict[str, Any]:
    constance = peers.available()
    client = redis.Redis.from_url(url)
    if constance:
        writer = peers.config(url, cached=False)
        writer.TEMPERATURE = -1.0

        def write(value: float) -> None:
            writer.TEMPERATURE = value

    else:
        client.set(PLAIN_KEY, -1.0)

        def write(value: float) -> None:
            client.set(PLAIN_KEY, value)

    reports: Any = CTX.Queue()
    stop = CTX.Event()
    procs = [
        CTX.Process(target=poller, args=(url, interval, reports, stop, constance), daemon=True)
        for _ in range(k)
    ]
    staleness: list[float] = []
    last: list[float] = []
    missing = 0
    try:
        for p in procs:
            p.start()
        wait_ready(reports, k)
        load = idle_load(client, load_seconds) if load_seconds else None
        for i in range(writes):
            time.sleep(random.uniform(0.2, 0.7) * interval)  # random phase against the pollers
            t0 = time.time()
            write(float(i))
            got = collect(reports, "poll", i, k, timeout=interval * 3 + 5)
            missing += k - len(got)
            staleness += [at - t0 for at, _ in got]
            if got:
                last.append(max(at for at, _ in got) - t0)
    finally:
        stop.set()
        stop_all(procs)
        drain(reports)
        client.close()
    return {
        "pollers": k,
        "interval_s": interval,
        "implementation": (
            f"django-constance CachingRedisBackend, TTL {interval:g} s, a read every "
            f"{POLL_READ_EVERY * MS:g} ms"
            if constance
            else f"plain GET every {interval:g} s"
        ),
        "writes": writes,
        "missing": missing,
        "staleness_ms": summary(staleness, MS),
        "last_poller_ms": summary(last, MS),
        "idle_load": load,
    }


def run(
    url: str,
    *,
    quick: bool,
    workers: tuple[int, ...] = (1, 16, 64),
    pollers: int = 16,
    intervals: tuple[float, ...] = (1.0, 0.1),
) -> dict[str, Any]:
    updates = 30 if quick else 150
    load_seconds = 5.5  # longer than the Live's reconcile interval (5 s)
    fleets = []
    for k in workers:
        measure_load = not quick or k == pollers  # quick: next to the pollers' fleet only
        fleets.append(fleet(url, k, updates, load_seconds if measure_load else 0.0))
    polls = []
    for interval in intervals:
        writes = (8 if quick else 30) if interval >= 0.5 else (20 if quick else 60)
        polls.append(polling(url, pollers, interval, writes, 3.0 if quick else load_seconds))
    return {"fleets": fleets, "polling": polls, "reconcile_interval_s": 5.0}
