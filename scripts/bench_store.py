"""Write-path benchmark: Bus.set (sequential and pipelined) next to a bare
FCALL of the same Lua function, in the same run, on a private redis-server.

    .venv/bin/python scripts/bench_store.py [--quick] [--json out.json]

Reports median rates over several rounds, p50/p99 latency of one call, the
ratio of each to the bare FCALL, and Redis's own time per change (from
INFO commandstats).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hotparams
from hotparams.server import LocalRedis


class ChatParams(BaseModel):
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=32_000)
    system_prompt: str = Field("You are a helpful assistant.", max_length=4000)


def rate(fn: Callable[[int], None], n: int) -> tuple[float, list[float]]:
    """Calls per second of fn(i) for i < n, and each call's latency."""
    lat: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t0)
    return n / (time.perf_counter() - start), lat


def p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def server_usec_per_call(client: Any) -> float:
    stats = client.info("commandstats")
    return float(stats.get("cmdstat_fcall", {}).get("usec_per_call", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n = 500 if args.quick else 3000
    rounds = 3 if args.quick else 5
    batch = 100

    with LocalRedis() as server:
        bus = hotparams.connect(server.url)
        bus.register("chat", ChatParams)
        client = server.client()
        temps = [round(0.01 * (i % 150), 2) for i in range(n + 1)]

        def bus_set(i: int) -> None:
            bus.set("chat", {"temperature": temps[i]}, author="bench")

        source = "python:bench"

        def bare_fcall(i: int) -> None:
            client.fcall(
                "hp_commit",
                1,
                "chat",
                "temperature",
                json.dumps(temps[i]),
                "@author",
                "bench",
                "@reason",
                "",
                "@source",
                source,
            )

        def bus_set_many(i: int) -> None:
            bus.set_many(
                [("chat", {"temperature": temps[(i * batch + k) % n]}) for k in range(batch)],
                author="bench",
            )

        def bare_pipeline(i: int) -> None:
            pipe = client.pipeline(transaction=False)
            for k in range(batch):
                pipe.fcall(
                    "hp_commit",
                    1,
                    "chat",
                    "temperature",
                    json.dumps(temps[(i * batch + k) % n]),
                    "@author",
                    "bench",
                    "@reason",
                    "",
                    "@source",
                    source,
                )
            pipe.execute()

        results: dict[str, dict[str, list[float]]] = {}
        cases: list[tuple[str, Callable[[int], None], int, int]] = [
            ("bare FCALL (sequential)", bare_fcall, n, 1),
            ("Bus.set (sequential)", bus_set, n, 1),
            ("bare FCALL (pipelined x100)", bare_pipeline, max(1, n // batch), batch),
            ("Bus.set_many (pipelined x100)", bus_set_many, max(1, n // batch), batch),
        ]
        server_time: dict[str, float] = {}
        for _ in range(rounds):
            for name, fn, count, per_call in cases:  # interleaved rounds: same noise
                client.config_resetstat()
                r, lat = rate(fn, count)
                server_time[name] = server_usec_per_call(client)
                entry = results.setdefault(name, {"rates": [], "lat": []})
                entry["rates"].append(r * per_call)
                entry["lat"] += lat
        bus.close()

    base = {
        "seq": statistics.median(results["bare FCALL (sequential)"]["rates"]),
        "pipe": statistics.median(results["bare FCALL (pipelined x100)"]["rates"]),
    }
    rows = []
    for name, entry in results.items():
        median = statistics.median(entry["rates"])
        baseline = base["pipe"] if "pipelined" in name else base["seq"]
        rows.append(
            {
                "case": name,
                "changes_per_s": round(median),
                "ratio_to_bare": round(median / baseline, 2),
                "p50_ms": round(p(entry["lat"], 0.5) * 1000, 3),
                "p99_ms": round(p(entry["lat"], 0.99) * 1000, 3),
                "server_us_per_fcall": round(server_time[name], 1),
            }
        )
    print(
        f"# write path, {rounds} rounds, python {platform.python_version()}, "
        f"{platform.machine()}, {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"{'case':32} {'changes/s':>10} {'x bare':>7} {'p50 ms':>8} {'p99 ms':>8} {'server us':>9}"
    )
    for row in rows:
        print(
            f"{row['case']:32} {row['changes_per_s']:>10} {row['ratio_to_bare']:>7} "
            f"{row['p50_ms']:>8} {row['p99_ms']:>8} {row['server_us_per_fcall']:>9}"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
