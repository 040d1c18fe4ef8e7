"""Fleet visibility (I/O-free): what each worker reports, and the summary
an operator reads ("has every worker picked up version 42?").

A Live handle sends a :class:`WorkerReport` with ``hp_report`` when it
applies a version and on a heartbeat; reports expire by themselves, so a
killed worker disappears after its time to live.
"""

from __future__ import annotations

import os
import socket
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .codec import dumps, loads
from .protocol import Command, FCall, Op, text

__all__ = [
    "Convergence",
    "WorkerReport",
    "convergence",
    "expose_op",
    "exposures_op",
    "leave_op",
    "report_op",
    "worker_id",
    "workers_op",
]


def worker_id(name: str = "") -> str:
    """``host:pid`` plus the application's name for the worker, if any."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{name}" if name else base


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """One worker's view of one namespace."""

    id: str
    namespace: str
    version: int
    epoch: str
    host: str = ""
    pid: int = 0
    name: str = ""
    connected: bool = True
    #: commit time of the applied version, and when this worker applied it (ms)
    committed_ms: int = 0
    applied_ms: int = 0
    #: applied_ms - committed_ms: how long the version took to reach this worker
    lag_ms: float = 0.0
    #: when it last confirmed it runs the current version (ms)
    confirmed_ms: int = 0
    last_error: str = ""
    started_ms: int = 0
    #: set by Redis when the report arrives (Redis's clock)
    reported_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("reported_ms")
        return dumps(data)

    @classmethod
    def from_json(cls, worker: str, raw: str | bytes) -> WorkerReport:
        data = loads(raw)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["id"] = worker
        known.setdefault("namespace", "")
        known.setdefault("version", 0)
        known.setdefault("epoch", "")
        return cls(**known)


def report_op(namespace: str, report: WorkerReport, ttl_s: float) -> Op[int]:
    ttl_ms = str(max(1, int(ttl_s * 1000)))
    reply = yield FCall("hp_report", namespace, (report.id, report.to_json(), ttl_ms))
    return int(reply)


def leave_op(namespace: str, worker: str) -> Op[bool]:
    reply = yield FCall("hp_leave", namespace, (worker,))
    return bool(int(reply))


def workers_op(namespace: str) -> Op[tuple[int, list[WorkerReport]]]:
    """Redis's time (ms) and the live workers' reports, by id."""
    reply = yield FCall("hp_workers", namespace, (), readonly=True)
    now = int(reply[0])
    reports = [
        WorkerReport.from_json(text(reply[i]), reply[i + 1]) for i in range(1, len(reply), 2)
    ]
    return now, sorted(reports, key=lambda r: r.id)


@dataclass(frozen=True, slots=True)
class Convergence:
    """How far a fleet is from a target version."""

    namespace: str
    target: int
    workers: int
    on_target: int
    behind: tuple[WorkerReport, ...]
    disconnected: tuple[WorkerReport, ...]
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    lag_max_ms: float | None

    @property
    def complete(self) -> bool:
        return self.workers > 0 and self.on_target == self.workers


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def convergence(
    namespace: str, target: int, epoch: str, reports: Sequence[WorkerReport]
) -> Convergence:
    """Summarise reports against the namespace's current version ``target``."""
    on = [r for r in reports if r.epoch == epoch and r.version >= target]
    behind = tuple(r for r in reports if r not in on)
    lags = [r.lag_ms for r in reports if r.epoch == epoch and r.version == target]
    p50: float | None = statistics.median(lags) if lags else None
    p99: float | None = _quantile(lags, 0.99) if lags else None
    worst: float | None = max(lags) if lags else None
    return Convergence(
        namespace=namespace,
        target=target,
        workers=len(reports),
        on_target=len(on),
        behind=tuple(sorted(behind, key=lambda r: (r.version, r.id))),
        disconnected=tuple(r for r in reports if not r.connected),
        lag_p50_ms=p50,
        lag_p99_ms=p99,
        lag_max_ms=worst,
    )


def expose_op(namespace: str, salt: str, counts: dict[str | None, int]) -> Op[int]:
    """Add a batch of assignment counts (variant name, None for the base)."""
    args: list[str] = [salt]
    for name, count in counts.items():
        if count:
            args += [name or "", str(int(count))]
    if len(args) == 1:
        return 0
    return int((yield FCall("hp_expose", namespace, tuple(args))))


def exposures_op(namespace: str, key: str, salt: str) -> Op[dict[str | None, int]]:
    """Assignment counts of the experiment with ``salt``: variant -> count."""

    reply = yield Command(namespace, ("HGETALL", key))
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
    out: dict[str | None, int] = {}
    prefix = f"{salt}:"
    for field_name, count in pairs:
        name = text(field_name)
        if name.startswith(prefix):
            out[name[len(prefix) :] or None] = int(count)
    return out
