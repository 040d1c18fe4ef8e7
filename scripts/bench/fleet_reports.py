"""How long the fleet calls take with many worker reports, on a private redis-server.

    python -m scripts.bench.fleet_reports [COUNT ...]    # default 10000 20000

For each count: ``bus.workers``, ``bus.convergence``, ``hotparams status``
(text and ``--json``) and ``hotparams set --wait --timeout 0`` (the write and one fleet read),
best of three, and Redis's own time per ``hp_workers`` page (commandstats).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hotparams
from hotparams.fleet import WorkerReport
from hotparams.server import LocalRedis
from tests.models import ChatParams

HOTPARAMS = str(Path(sys.executable).parent / "hotparams")


def best(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def cli(url: str, *args: str) -> None:
    env = {**os.environ, "HOTPARAMS_URL": url, "COLUMNS": "120"}
    subprocess.run([HOTPARAMS, *args], env=env, capture_output=True, check=False)


def measure(count: int) -> None:
    server = LocalRedis().start()
    bus = hotparams.connect(server.url)
    version = bus.register("chat", ChatParams).version
    epoch = bus.head("chat").epoch
    pipe = bus.client.pipeline(transaction=False)
    for i in range(count):
        report = WorkerReport(f"host-{i:05d}:{1000 + i}", "chat", version, epoch, lag_ms=1.5)
        pipe.fcall("hp_report", 1, "chat", report.id, report.to_json(), 600_000)
    pipe.execute()
    bus.client.config_resetstat()
    workers = best(lambda: bus.workers("chat"))
    conv = best(lambda: bus.convergence("chat"))
    stats = bus.client.info("commandstats").get("cmdstat_fcall_ro", {})
    per_page = float(stats.get("usec_per_call", 0.0))
    status = best(lambda: cli(server.url, "status", "chat"))
    status_json = best(lambda: cli(server.url, "status", "chat", "--json"))
    wait = best(lambda: cli(server.url, "set", "chat", "max_tokens=301", "--wait", "--timeout=0"))
    print(
        f"{count:>6} reports: workers {workers * 1000:7.1f} ms, convergence {conv * 1000:7.1f} ms, "
        f"hp_workers page {per_page:7.0f} us in Redis, status {status:5.2f} s, "
        f"status --json {status_json:5.2f} s, set --wait {wait:5.2f} s"
    )
    bus.close()
    server.close()


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [10_000, 20_000]
    for count in counts:
        measure(count)


if __name__ == "__main__":
    main()
