"""The suite: the pytest phase of ``scripts/test`` timed whole, as CI runs it.

Runs ``python -m pytest -n <2 per core> --dist worksteal`` in the checkout
(the tests start their own servers) and records the wall time, the worker
count, the counts of the last line, the CPU time it used (its children's
user + system time) and the slowest tests (``--durations``).  Only in a full
run: it takes about two minutes.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from typing import Any

from .common import ROOT


def run(url: str, *, quick: bool = False) -> dict[str, Any]:
    del url  # the tests start their own servers
    workers = (os.cpu_count() or 1) * 2
    command = [
        sys.executable,
        *("-m", "pytest", "-n", str(workers), "--dist", "worksteal"),
        *("-q", "-p", "no:cacheprovider", "--durations=5"),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error|skipped)", last)}
    slowest = [
        line.strip() for line in lines if re.match(r"\s*\d+\.\d+s (call|setup|teardown)", line)
    ]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": wall,
        "pytest_seconds": _pytest_seconds(last),
        "workers": workers,
        "returncode": done.returncode,
        "counts": counts,
        "last_line": last,
        "cpu_seconds": cpu,
        "cores": os.cpu_count() or 1,
        "slowest": slowest[:5],
    }


def _pytest_seconds(last: str) -> float:
    m = re.search(r"in ([\d.]+)s", last)
    return float(m.group(1)) if m else float("nan")
