"""Write path: ``Bus.set`` and ``Bus.set_many`` against a bare FCALL of the same function.

Moved here from ``scripts/bench_store.py``.  Four cases, run round after
round in an order rotated each round, on one namespace:

- ``bare FCALL``: ``FCALL hp_commit 1 bench temperature <json> @author ...
  @reason ... @source ... @base <version>`` through a plain redis-py client:
  the same arguments ``Bus.set`` sends (the caller tracks the version);
- ``Bus.set``: validation by the model (merged with the version it applies
  to), encoding, the same FCALL, error decoding;
- ``bare pipeline``: 100 such FCALLs in one redis-py pipeline;
- ``Bus.set_many``: 100 changes validated, then sent in one pipeline.

Per case: changes/s (median over rounds), the ratio to its bare twin in the
same round (median over rounds), p50/p99 of one call, and Redis's own time
per FCALL from INFO commandstats (reset before each case's batch).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import hotparams

from .common import NS, BenchParams, fcall_usec_per_call, loadavg, pct, temperature

BATCH = 100
SOURCE = "python:bench"


def timed(fn: Callable[[int], None], count: int) -> tuple[float, list[float]]:
    """Seconds for fn(0) .. fn(count - 1), and each call's latency."""
    lat: list[float] = []
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t0)
    return time.perf_counter() - start, lat


class Writers:
    """The four writers, on one namespace; the bare ones track the version for ``@base``."""

    def __init__(self, url: str) -> None:
        self.bus = hotparams.connect(url)
        self.bus.register(NS, BenchParams)
        self.client = self.bus.client
        self.version = self.bus.head(NS).version
        self.counter = 0

    def resync(self) -> None:
        self.version = self.bus.head(NS).version

    def _value(self) -> float:
        self.counter += 1
        return temperature(self.counter)

    def _args(self, base: int) -> list[Any]:
        args = ["hp_commit", 1, NS, "temperature", json.dumps(self._value())]
        return [*args, "@author", "bench", "@reason", "", "@source", SOURCE, "@base", base]

    def bare_fcall(self, _: int) -> None:
        self.version = int(self.client.fcall(*self._args(self.version)))

    def bus_set(self, _: int) -> None:
        self.version = self.bus.set(
            NS, {"temperature": self._value()}, author="bench", source=SOURCE
        )

    def bare_pipeline(self, _: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for k in range(BATCH):
            pipe.fcall(*self._args(self.version + k))
        self.version = int(pipe.execute()[-1])

    def bus_set_many(self, _: int) -> None:
        items = [(NS, {"temperature": self._value()}) for _k in range(BATCH)]
        self.version = self.bus.set_many(items, author="bench", source=SOURCE)[-1]


def run(
    url: str, *, quick: bool, n: int | None = None, rounds: int | None = None
) -> dict[str, Any]:
    n = n or (500 if quick else 3000)
    rounds = rounds or (5 if quick else 9)
    w = Writers(url)
    calls = max(1, n // BATCH)
    cases: list[tuple[str, str, Callable[[int], None], int, int]] = [
        ("bare_fcall", "bare FCALL (sequential)", w.bare_fcall, n, 1),
        ("bus_set", "`Bus.set` (sequential)", w.bus_set, n, 1),
        ("bare_pipeline", f"bare FCALL (pipelined x{BATCH})", w.bare_pipeline, calls, BATCH),
        ("bus_set_many", f"`Bus.set_many` (pipelined x{BATCH})", w.bus_set_many, calls, BATCH),
    ]
    twin = {"bus_set": "bare_fcall", "bus_set_many": "bare_pipeline"}
    rates: dict[str, list[float]] = {name: [] for name, *_ in cases}
    lat: dict[str, list[float]] = {name: [] for name, *_ in cases}
    server: dict[str, list[float]] = {name: [] for name, *_ in cases}
    ratios: dict[str, list[float]] = {name: [] for name in twin}
    for _name, _label, fn, _count, _per_call in cases:  # warm up
        fn(0)
        w.resync()
    load_before = loadavg()
    try:
        for r in range(rounds):
            shift = r % len(cases)
            this_round: dict[str, float] = {}
            for name, _, fn, count, per_call in cases[shift:] + cases[:shift]:
                w.resync()  # the other writers moved it
                w.client.config_resetstat()
                seconds, latencies = timed(fn, count)
                server[name].append(fcall_usec_per_call(w.client))
                this_round[name] = count * per_call / seconds
                rates[name].append(this_round[name])
                lat[name] += [x / per_call for x in latencies]
            for name, base in twin.items():
                ratios[name].append(this_round[name] / this_round[base])
    finally:
        w.bus.close()
    out: dict[str, Any] = {
        "rounds": rounds,
        "changes_per_round": n,
        "batch": BATCH,
        "loadavg": [load_before, loadavg()],
        "cases": {},
    }
    for name, label, _, _, per_call in cases:
        out["cases"][name] = {
            "label": label,
            "changes_per_s": statistics.median(rates[name]),
            "ratio_to_bare": statistics.median(ratios[name]) if name in ratios else 1.0,
            "call_ms_p50": pct(lat[name], 0.5) * 1000 * per_call,
            "call_ms_p99": pct(lat[name], 0.99) * 1000 * per_call,
            "client_us_per_change_p50": pct(lat[name], 0.5) * 1e6,
            "server_us_per_change": statistics.median(server[name]),
        }
    return out
