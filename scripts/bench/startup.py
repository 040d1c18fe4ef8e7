"""Start-up: one ``hotparams get`` call, as an operator types it, against the floor.

Cases, run round after round in an order rotated each round, each a fresh
process on the section's private server:

- ``python -c pass``: the interpreter alone (the floor no CLI goes under);
- ``bare redis-py``: ``python -c`` importing redis and reading the
  namespace's head hash (the least a client in Python does for a read);
- ``hotparams get``: the console script, printing the namespace's table.

Per case the wall time of the whole process (p50, p90, min).  Then one
``python -X importtime`` run of ``hotparams get`` gives the cumulative
import time of the packages it loads, the reason for what is above the floor.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hotparams

from .common import NS, BenchParams, pct

#: the packages whose import time the report lists (cumulative, from -X importtime)
PACKAGES = ("redis", "pydantic", "typer", "rich", "orjson", "hotparams", "hotparams.cli.app")


def _commands(url: str) -> dict[str, list[str]]:
    python = sys.executable
    cli = str(Path(python).with_name("hotparams"))
    bare = (
        "import redis, sys; c = redis.Redis.from_url(sys.argv[1]); "
        f"print(c.hgetall('hp:{{{NS}}}:meta'))"
    )
    return {
        "python": [python, "-c", "pass"],
        "bare_redis": [python, "-c", bare, url],
        "hotparams_get": [cli, "--url", url, "get", NS],
    }


def _wall(command: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {done.returncode}: {done.stderr[-400:]}")
    return wall


def imports(url: str) -> dict[str, float]:
    """Cumulative import time (ms) of each of PACKAGES in one ``hotparams get``."""
    command = [sys.executable, "-X", "importtime", "-m", "hotparams", "--url", url, "get", NS]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found: dict[str, float] = {}
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
        if m and m.group(3) in PACKAGES:  # the outermost import of the package
            found[m.group(3)] = max(found.get(m.group(3), 0.0), int(m.group(1)) / 1000)
    return found


def run(url: str, *, quick: bool = False) -> dict[str, Any]:
    bus = hotparams.connect(url)
    bus.register(NS, BenchParams)
    bus.set(NS, {"temperature": 0.5})
    bus.close()
    commands = _commands(url)
    rounds = 4 if quick else 15
    walls: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            walls[name].append(_wall(commands[name]))
    cases = {
        name: {
            "ms_p50": pct(values, 0.5) * 1000,
            "ms_p90": pct(values, 0.9) * 1000,
            "ms_min": min(values) * 1000,
            "runs": len(values),
        }
        for name, values in walls.items()
    }
    return {
        "cases": cases,
        "imports_ms": imports(url),
        "rounds": rounds,
        # redis-py 8 loads the OpenTelemetry SDK at import when it is installed
        "otel_sdk_installed": importlib.util.find_spec("opentelemetry.sdk") is not None,
    }
