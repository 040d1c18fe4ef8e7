"""What the benchmark sections share: the model, statistics, the machine, Redis's own counters."""

from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[2]

#: worker processes are forked: they inherit the parent's imports and need no pickling
CTX = multiprocessing.get_context("fork")

NS = "bench"


class BenchParams(BaseModel):
    """The namespace every section uses: an LLM worker's knobs."""

    model: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=32_000)
    system_prompt: str = Field("You are a helpful assistant.", max_length=4000)


def temperature(i: int) -> float:
    """The i-th value written: consecutive values always differ."""
    return round(0.01 + (i % 150) / 100, 2)


# ---------------------------------------------------------------- statistics


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """n, p50, p99, mean, max of values (times ``scale``)."""
    if not values:
        nan = float("nan")
        return {"n": 0, "p50": nan, "p99": nan, "mean": nan, "max": nan}
    return {
        "n": len(values),
        "p50": statistics.median(values) * scale,
        "p99": pct(values, 0.99) * scale,
        "mean": statistics.fmean(values) * scale,
        "max": max(values) * scale,
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# ---------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _dirty() -> list[str]:
    """Files of the package changed in the work tree but not committed (they were measured)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", "hotparams"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return []
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _mem_total_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_py": _version("redis"),
        "pydantic": _version("pydantic"),
        "django": _version("django"),
        "django_constance": _version("django-constance"),
        "hotparams": _version("hotparams"),
        "git_commit": _git_commit(),
        "uncommitted": _dirty(),
    }


# ---------------------------------------------------------------- Redis's own view


def info_number(client: redis.Redis, section: str, name: str) -> float:
    return float(client.info(section).get(name, 0))


def commands_processed(client: redis.Redis) -> int:
    return int(info_number(client, "stats", "total_commands_processed"))


def redis_cpu_seconds(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def used_memory(client: redis.Redis) -> int:
    return int(info_number(client, "memory", "used_memory"))


def redis_version(client: redis.Redis) -> str:
    return str(client.info("server")["redis_version"])


def fcall_usec_per_call(client: redis.Redis) -> float:
    """Redis's own time per FCALL since the last CONFIG RESETSTAT (INFO commandstats)."""
    stats = client.info("commandstats")
    return float(stats.get("cmdstat_fcall", {}).get("usec_per_call", 0.0))


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (INFO and CONFIG left out)."""
    out: dict[str, int] = {}
    for name, stats in client.info("commandstats").items():
        command = name.removeprefix("cmdstat_")
        if command != "info" and not command.startswith("config"):
            out[command] = int(stats["calls"])
    return out


class LoadWindow:
    """Commands per second and Redis CPU over a window, from INFO."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.t0 = time.perf_counter()
        self.cmds0 = commands_processed(client)
        self.cpu0 = redis_cpu_seconds(client)

    def close(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        cmds = commands_processed(self.client) - self.cmds0 - 2  # the two INFO stats probes
        cpu = redis_cpu_seconds(self.client) - self.cpu0
        return {
            "seconds": elapsed,
            "commands_per_s": max(0, cmds) / elapsed,
            "redis_cpu_percent": 100.0 * cpu / elapsed,
        }


#: commands clients send in these benchmarks; everything else INFO counts ran inside a function
CLIENT_COMMANDS = frozenset(
    {"fcall", "fcall_ro", "ping", "get", "set", "mget", "publish", "subscribe", "hello"}
    | {"spublish", "ssubscribe", "sunsubscribe"}
    | {"client|setname", "client|setinfo", "unsubscribe", "select"}
)


def idle_load(client: redis.Redis, seconds: float) -> dict[str, Any]:
    """Redis's load over a window with no writes: commands/s (all: INFO counts those a
    function runs too), requests/s (commands sent by clients), by command, Redis CPU."""
    client.config_resetstat()
    window = LoadWindow(client)
    time.sleep(seconds)
    out: dict[str, Any] = window.close()
    calls = command_calls(client)
    out["by_command_per_s"] = {k: v / out["seconds"] for k, v in calls.items()}
    out["requests_per_s"] = (
        sum(v for k, v in calls.items() if k in CLIENT_COMMANDS) / out["seconds"]
    )
    return out


def drain(queue: Any) -> None:
    """Throw away whatever a multiprocessing queue still holds."""
    while True:
        try:
            queue.get_nowait()
        except Exception:
            return


def stop_all(procs: Sequence[Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


def on_applied(handle: Any, record: Callable[[int, float], None]) -> str:
    """Call ``record(version, time.time())`` as soon as ``handle`` serves a new version.

    Instrumentation: wraps the handle's private ``_install`` (which swaps the
    one reference readers see) so the time is taken right after the swap; a
    handle without it is timed by a change callback instead (a thread or task
    hop later).  Returns which of the two ("swap", "callback").
    """
    install = getattr(handle, "_install", None)
    if install is None:
        handle.on_change(lambda old, new: record(new.version, time.time()))
        return "callback"

    def timed_install(view: Any) -> None:
        install(view)
        record(handle.current.version, time.time())

    handle._install = timed_install
    return "swap"
