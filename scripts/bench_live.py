# ruff: noqa: B018  (the timed loops evaluate attribute reads for their cost alone)
"""Read-path and propagation benchmark of Live handles, on a private redis-server.

    .venv/bin/python scripts/bench_live.py [--quick] [--json out.json]

1. Read cost: ``live.current.params.temperature`` next to
   ``holder.snap.attr`` (a plain object holding a plain object), measured
   in the same process, interleaved batch by batch, first idle, then while
   a separate process writes 1,000 updates per second to the namespace the
   handle follows.  Each batch times 200,000 reads (an unrolled loop of
   10); the script reports the median and p99 of the per-read time over the
   batches, with and without the cost of the loop itself (an empty loop
   timed the same way), and the ratio live / holder.  A third column reads
   the same attribute of the same pydantic model through a plain holder
   (``holder.snap.params.temperature``): pydantic's ``BaseModel`` defines
   ``__getattr__``, which keeps CPython from specialising attribute reads
   on every model instance, so that column shows what the handle itself
   adds.

2. ``live.for_user(user_id).params.temperature`` (A/B variants: a 50%
   variant and a 100-user allow-list; users cycled from a list of 1,000
   ids) next to ``live.current.params.temperature``, interleaved batch by
   batch like the reads above; and ``for_user`` on a namespace without
   variants.  Each for_user call also counts one exposure (flushed to
   Redis by the handle's reporter thread, off the measured path).

3. Propagation: for 1, 16 and 64 worker processes (forked, one Live
   each), the time from the moment the parent calls ``bus.set`` to the
   moment each worker's change callback runs (right after the swap of
   ``current``), on the same host (``time.time()``).  Updates are sent one
   at a time: the next one after every worker applied the previous one.
   Then, for the same updates, the lag the workers report themselves
   (``applied_ms - committed_ms`` in their fleet reports, commit time by
   Redis's clock) as ``bus.convergence`` summarises it once every worker
   reported the version: the median of its per-version p50 and p99, and the
   p50/p99 over every worker's report pooled.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hotparams
from hotparams.fleet import convergence
from hotparams.server import LocalRedis

NS = "bench"
VNS = "bench-ab"
CTX = multiprocessing.get_context("fork")
UNROLL = 10


class BenchParams(BaseModel):
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=32_000)
    system_prompt: str = Field("You are a helpful assistant.", max_length=4000)


class Plain:
    """The baseline: an attribute through a plain holder object."""

    def __init__(self, attr: float) -> None:
        self.attr = attr


class Holder:
    def __init__(self, snap: Plain) -> None:
        self.snap = snap


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- read cost


def time_holder(holder: Holder, n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        holder.snap.attr
        holder.snap.attr
        holder.snap.attr
        holder.snap.attr
        holder.snap.attr
        holder.snap.attr
        holder.snap.attr
        holder.snap.attr
        holder.snap.attr
        holder.snap.attr
    return (time.perf_counter_ns() - t0) / (n * UNROLL)


def time_live(live: hotparams.Live[BenchParams], n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        live.current.params.temperature
        live.current.params.temperature
        live.current.params.temperature
        live.current.params.temperature
        live.current.params.temperature
        live.current.params.temperature
        live.current.params.temperature
        live.current.params.temperature
        live.current.params.temperature
        live.current.params.temperature
    return (time.perf_counter_ns() - t0) / (n * UNROLL)


def time_model(holder: Any, n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        holder.snap.params.temperature
        holder.snap.params.temperature
        holder.snap.params.temperature
        holder.snap.params.temperature
        holder.snap.params.temperature
        holder.snap.params.temperature
        holder.snap.params.temperature
        holder.snap.params.temperature
        holder.snap.params.temperature
        holder.snap.params.temperature
    return (time.perf_counter_ns() - t0) / (n * UNROLL)


def time_for_user(live: hotparams.Live[BenchParams], users: list[str], n: int) -> float:
    """``n`` calls (a multiple of ``len(users)``), per call in ns."""
    rounds = max(1, n // len(users))
    t0 = time.perf_counter_ns()
    for _ in range(rounds):
        for user in users:
            live.for_user(user).params.temperature
    return (time.perf_counter_ns() - t0) / (rounds * len(users))


def time_current_loop(live: hotparams.Live[BenchParams], users: list[str], n: int) -> float:
    """The same loop shape as ``time_for_user``, reading ``current`` instead."""
    rounds = max(1, n // len(users))
    t0 = time.perf_counter_ns()
    for _ in range(rounds):
        for _user in users:
            live.current.params.temperature
    return (time.perf_counter_ns() - t0) / (rounds * len(users))


def time_empty(n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        pass
    return (time.perf_counter_ns() - t0) / (n * UNROLL)


def read_cost(live: hotparams.Live[BenchParams], batches: int, n: int) -> dict[str, Any]:
    holder = Holder(Plain(0.7))
    same_model: Any = Holder(Plain(0.7))
    h: list[float] = []
    lv: list[float] = []
    hm: list[float] = []
    e: list[float] = []
    versions = live.current.version
    for _ in range(batches):
        same_model.snap = live.current
        h.append(time_holder(holder, n))
        lv.append(time_live(live, n))
        hm.append(time_model(same_model, n))
        e.append(time_empty(n))
    loop = statistics.median(e)
    out = {
        "holder_ns": {"p50": statistics.median(h), "p99": pct(h, 0.99)},
        "live_ns": {"p50": statistics.median(lv), "p99": pct(lv, 0.99)},
        "holder_same_model_ns": {"p50": statistics.median(hm), "p99": pct(hm, 0.99)},
        "ratio_vs_same_model": statistics.median(lv) / statistics.median(hm),
        "loop_ns": loop,
        "ratio": statistics.median(lv) / statistics.median(h),
        "ratio_p99": pct(lv, 0.99) / pct(h, 0.99),
        "ratio_net": (statistics.median(lv) - loop) / max(statistics.median(h) - loop, 1e-9),
        "versions_applied_during": live.current.version - versions,
    }
    return out


def load_writer(url: str, rate: float, seconds: float, result: Any) -> None:
    """Write ``rate`` updates per second (FCALL hp_set, the redis-cli path), paced."""
    client = hotparams.connect(url).client
    interval = 1.0 / rate
    start = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - start < seconds:
        due = start + sent * interval
        if now < due:
            time.sleep(due - now)
        value = str(0.5 + (sent % 100) / 100)
        client.execute_command("FCALL", "hp_set", "1", NS, "temperature", value)  # type: ignore[no-untyped-call]
        sent += 1
    result.put(sent / (time.perf_counter() - start))


def bench_reads(url: str, quick: bool) -> dict[str, Any]:
    batches, n = (40, 10_000) if quick else (150, 20_000)
    bus = hotparams.connect(url)
    live = bus.watch(NS, BenchParams)
    try:
        time_live(live, 1000)  # warm up
        idle = read_cost(live, batches, n)
        rates: Any = CTX.Queue()
        seconds = 3.0 if quick else 8.0
        writer = CTX.Process(target=load_writer, args=(url, 1000.0, seconds + 1.0, rates))
        writer.start()
        time.sleep(0.5)  # let the stream settle
        busy = read_cost(live, batches, n)
        writer.join()
        busy["write_rate_per_s"] = rates.get(timeout=10)
        busy["listener"] = {
            "applied": live.status().applied,
            "resyncs": live.status().resyncs,
        }
    finally:
        live.close()
        bus.close()
    return {"idle": idle, "under_1000_updates_per_s": busy}


def bench_for_user(url: str, quick: bool) -> dict[str, Any]:
    """for_user vs current, with variants (VNS) and without (NS)."""
    batches, n = (30, 20_000) if quick else (100, 50_000)
    users = [f"user-{i}" for i in range(1000)]
    setup = hotparams.connect(url)
    setup.register(VNS, BenchParams)
    setup.set_variant(VNS, "cool", {"temperature": 0.3}, percent=50)
    setup.set_variant(VNS, "vip", {"model": "gpt-4o"}, users=users[::10])
    # exposures flush every 5 s (the default), on the reporter thread
    live = setup.watch(VNS, BenchParams)
    plain = setup.watch(NS, BenchParams)
    try:
        time_for_user(live, users, 10_000)  # warm up
        fu: list[float] = []
        cur: list[float] = []
        none: list[float] = []
        for _ in range(batches):
            fu.append(time_for_user(live, users, n))
            cur.append(time_current_loop(live, users, n))
            none.append(time_for_user(plain, users, n))
        split = {str(k): v for k, v in _split(live, users).items()}
    finally:
        live.close()
        plain.close()
    exposures = setup.exposures(VNS)
    setup.close()
    return {
        "for_user_ns": {"p50": statistics.median(fu), "p99": pct(fu, 0.99)},
        "current_ns": {"p50": statistics.median(cur), "p99": pct(cur, 0.99)},
        "for_user_no_variants_ns": {"p50": statistics.median(none), "p99": pct(none, 0.99)},
        "extra_ns": statistics.median(fu) - statistics.median(cur),
        "split": split,
        "exposures_counted": sum(exposures.values()),
        # the timed batches, the warm-up and the split: every call counts one exposure
        "calls": (batches * max(1, n // len(users)) + 10 + 1) * len(users),
    }


def _split(live: hotparams.Live[BenchParams], users: list[str]) -> dict[str | None, int]:
    out: dict[str | None, int] = {}
    for user in users:
        name = live.for_user(user).variant
        out[name] = out.get(name, 0) + 1
    return out


# ---------------------------------------------------------------- propagation


def latency_worker(url: str, reports: Any, stop: Any) -> None:
    bus = hotparams.connect(url)
    live = bus.watch(NS, BenchParams)
    pid = os.getpid()
    live.on_change(lambda old, new: reports.put((pid, new.version, time.time())))
    reports.put((pid, -1, 0.0))  # ready
    stop.wait()
    live.close()
    bus.close()


def bench_propagation(url: str, workers: int, updates: int) -> dict[str, Any]:
    bus = hotparams.connect(url)
    reports: Any = CTX.Queue()
    stop = CTX.Event()
    procs = [CTX.Process(target=latency_worker, args=(url, reports, stop)) for _ in range(workers)]
    for p in procs:
        p.start()
    pids = {p.pid for p in procs}
    ready = 0
    while ready < workers:
        if reports.get(timeout=60)[1] == -1:
            ready += 1
    per_worker: list[float] = []
    fleet: list[float] = []
    set_cost: list[float] = []
    timeouts = 0
    conv_p50: list[float] = []
    conv_p99: list[float] = []
    reported: list[float] = []
    unreported = 0
    for i in range(updates):
        t0 = time.time()
        v = bus.set(NS, {"temperature": round(0.01 + (i % 150) / 100, 2)})
        set_cost.append(time.time() - t0)
        got: dict[int, float] = {}
        deadline = time.monotonic() + 10
        while len(got) < workers and time.monotonic() < deadline:
            try:
                pid, version, at = reports.get(timeout=1)
            except Exception:
                continue
            if version == v:
                got[pid] = at - t0
        timeouts += workers - len(got)
        per_worker += list(got.values())
        if got:
            fleet.append(max(got.values()))
        conv = _converged(bus, v, pids)
        if conv is None:
            unreported += 1
            late = bus.convergence(NS, v)
            print(
                f"  version {v}: {late.on_target}/{late.workers} reported within 5 s; "
                f"behind: {[(r.id, r.version) for r in late.behind[:3]]}",
                file=sys.stderr,
            )
        else:
            conv_p50.append(conv.lag_p50_ms or 0.0)
            conv_p99.append(conv.lag_p99_ms or 0.0)
            reported += [r.lag_ms for r in bus.workers(NS) if r.version == v and r.pid in pids]
        time.sleep(0.01)
    stop.set()
    for p in procs:
        p.join(20)
        if p.is_alive():
            p.kill()
    bus.close()
    ms = 1000.0
    return {
        "workers": workers,
        "updates": updates,
        "samples": len(per_worker),
        "missing": timeouts,
        "per_worker_ms": {
            "p50": statistics.median(per_worker) * ms,
            "p99": pct(per_worker, 0.99) * ms,
        },
        "last_worker_ms": {"p50": statistics.median(fleet) * ms, "p99": pct(fleet, 0.99) * ms},
        "bus_set_ms_p50": statistics.median(set_cost) * ms,
        "reported_lag_ms": {
            "convergence_p50_median": statistics.median(conv_p50) if conv_p50 else None,
            "convergence_p99_median": statistics.median(conv_p99) if conv_p99 else None,
            "pooled_p50": statistics.median(reported) if reported else None,
            "pooled_p99": pct(reported, 0.99) if reported else None,
            "versions_not_reported_by_all": unreported,
        },
    }


def _converged(bus: hotparams.Bus, version: int, pids: set[int | None]) -> Any:
    """What ``bus.convergence`` computes, once every worker of ``pids`` reported
    ``version`` (None after 5 s).  Reports of other processes are left out: the
    load writer of the read benchmark was forked with a live handle, which
    reports (a worker like any other) until its report expires."""
    deadline = time.monotonic() + 5
    epoch = bus.head(NS).epoch
    while time.monotonic() < deadline:
        ours = [r for r in bus.workers(NS) if r.pid in pids]
        conv = convergence(NS, version, epoch, ours)
        if conv.complete and conv.workers == len(pids):
            return conv
        time.sleep(0.005)
    return None


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--workers", default="1,16,64", help="worker counts for propagation")
    parser.add_argument(
        "--propagation-only", action="store_true", help="skip the read and for_user costs"
    )
    args = parser.parse_args()
    updates = 30 if args.quick else 100
    with LocalRedis() as server:
        setup = hotparams.connect(server.url)
        setup.register(NS, BenchParams)
        setup.close()
        results: dict[str, Any] = {
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
            },
            "reads": {} if args.propagation_only else bench_reads(server.url, args.quick),
            "for_user": {} if args.propagation_only else bench_for_user(server.url, args.quick),
            "propagation": [
                bench_propagation(server.url, int(k), updates) for k in args.workers.split(",")
            ],
        }
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report_reads(results: dict[str, Any]) -> None:
    print("\nRead cost per read (ns, median / p99 over batches of reads)")
    print(
        f"{'':26}{'holder.snap.attr':>19}{'live.current.params.t':>23}{'ratio':>7}{'net':>6}"
        f"{'holder.snap.params.t':>22}{'ratio':>7}"
    )
    for name, r in results["reads"].items():
        h, lv, hm = r["holder_ns"], r["live_ns"], r["holder_same_model_ns"]
        print(
            f"{name:26}{h['p50']:>9.1f} / {h['p99']:<7.1f}{lv['p50']:>13.1f} / {lv['p99']:<7.1f}"
            f"{r['ratio']:>7.2f}{r['ratio_net']:>6.2f}{hm['p50']:>12.1f} / {hm['p99']:<7.1f}"
            f"{r['ratio_vs_same_model']:>7.2f}"
        )
    busy = results["reads"]["under_1000_updates_per_s"]
    print(
        f"  (loop overhead {busy['loop_ns']:.1f} ns/read; achieved write rate "
        f"{busy['write_rate_per_s']:.0f}/s; versions applied during the busy run "
        f"{busy['versions_applied_during']})"
    )
    fu = results["for_user"]
    print("\nfor_user(user).params.temperature vs current.params.temperature (ns per call)")
    print(
        f"  for_user (2 variants) p50 {fu['for_user_ns']['p50']:.0f} / p99 "
        f"{fu['for_user_ns']['p99']:.0f}; current in the same loop p50 "
        f"{fu['current_ns']['p50']:.0f} / p99 {fu['current_ns']['p99']:.0f}; "
        f"for_user adds {fu['extra_ns']:.0f} ns"
    )
    print(
        f"  for_user without variants p50 {fu['for_user_no_variants_ns']['p50']:.0f}; "
        f"split over 1,000 users {fu['split']}; exposures counted in Redis "
        f"{fu['exposures_counted']} of {fu['calls']} calls"
    )


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"Python {m['python']}, {m['cpus']} CPUs, {m['platform']}")
    if results["reads"]:
        report_reads(results)
    print("\nPublish-to-applied latency (ms), from bus.set() called to a worker's callback")
    head = ("workers", "samples", "missing", "p50", "p99", "last p50", "last p99")
    print("".join(f"{h:>10}" for h in head))
    for r in results["propagation"]:
        pw, lw = r["per_worker_ms"], r["last_worker_ms"]
        print(
            f"{r['workers']:>10}{r['samples']:>10}{r['missing']:>10}{pw['p50']:>10.2f}"
            f"{pw['p99']:>10.2f}{lw['p50']:>10.2f}{lw['p99']:>10.2f}"
        )
    print(f"  (bus.set itself: p50 {results['propagation'][0]['bus_set_ms_p50']:.2f} ms)")
    print("\nLag the workers report (applied_ms - committed_ms), as bus.convergence shows it (ms)")
    head = ("workers", "conv p50", "conv p99", "pooled p50", "pooled p99", "unreported")
    print("".join(f"{h:>12}" for h in head))
    for r in results["propagation"]:
        lag = r["reported_lag_ms"]
        cells = [
            lag["convergence_p50_median"],
            lag["convergence_p99_median"],
            lag["pooled_p50"],
            lag["pooled_p99"],
        ]
        print(
            f"{r['workers']:>12}"
            + "".join(f"{c:>12.2f}" if c is not None else f"{'-':>12}" for c in cells)
            + f"{lag['versions_not_reported_by_all']:>12}"
        )
    print("  (conv: the median over versions of bus.convergence's p50 and p99)")


if __name__ == "__main__":
    main()
