"""Fleet visibility (I/O-free): what each worker reports, and the summary
an operator reads ("has every worker picked up version 42?").

A Live handle sends a :class:`WorkerReport` with ``hp_report`` when it
applies a version and on a heartbeat; reports expire by themselves, so a
killed worker disappears after its time to live.  The handles of one
process can send theirs together (:func:`reports_op`, ``hp_reports``: up to
``MAX_REPORTS_PER_CALL`` workers of one namespace per call, each filed as
``hp_report`` files it).

Bounds (enforced by ``hotparams/lua/fleet.lua`` for every caller; the same
numbers here keep this client within them): a report is a JSON object of at
most ``MAX_REPORT_BYTES``, lives at most ``MAX_TTL_MS`` unless renewed, and a
namespace holds at most ``MAX_REPORTS`` live reports (a new id beyond that is
refused with ``HP_LIMIT``).  ``hp_workers`` is read in pages of
``WORKERS_PAGE`` (a ZSCAN: bounded work per call, however large the fleet).
Exposure counts: at most ``MAX_EXPOSE_INCREMENT`` per counter and call,
``MAX_EXPOSE_PAIRS`` counters per call, a counter never passes 2^53 - 1.

Who sent a report: Lua cannot ask Redis who the caller is (``ACL WHOAMI``
is not allowed in a function), so the client says which ACL user it
connects as (``user``, from its URL) and the report is filed in that
user's own key, ``hp:{ns}:workers:u:<user>``.  Functions write with the
caller's rights, so under an ACL that lets each worker user write only its
own key (and the shared index ``hp:{ns}:workers``), a worker cannot
overwrite or remove another user's report, and ``user`` in a listed report
is the key it was found in.  The shared index it can still edit: it can
hide another user's report until that worker's next heartbeat re-lists it.
"""

from __future__ import annotations

import os
import socket
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .codec import dumps, loads
from .errors import ProtocolError
from .protocol import Command, FCall, Head, Op, text

__all__ = [
    "MAX_EXPOSE_INCREMENT",
    "MAX_EXPOSE_PAIRS",
    "MAX_REPORTS",
    "MAX_REPORTS_PER_CALL",
    "MAX_REPORT_BYTES",
    "MAX_TTL_MS",
    "WORKERS_PAGE",
    "Convergence",
    "WorkerReport",
    "acl_user",
    "convergence",
    "expose_op",
    "exposures_op",
    "leave_op",
    "report_op",
    "reports_op",
    "worker_id",
    "workers_op",
]


MAX_REPORT_BYTES = 4096
MAX_REPORTS = 50_000
MAX_TTL_MS = 3_600_000
#: index entries per hp_workers page (the library allows up to 1000)
WORKERS_PAGE = 500
MAX_EXPOSE_PAIRS = 256
#: worker reports an hp_reports call files (reports_op sends more in several calls)
MAX_REPORTS_PER_CALL = 256
MAX_EXPOSE_INCREMENT = 1_000_000_000
#: the longest error text and name a report carries
_MAX_TEXT = 1024


def acl_user(url: str) -> str:
    """The ACL user a connection URL authenticates as (``default`` without one)."""
    try:
        parts = urlsplit(url)
        named = parts.username or parse_qs(parts.query).get("username", [""])[0]
    except ValueError:
        return "default"
    return named or "default"


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
    #: the ACL user the worker connects as, as the worker says (Redis cannot tell)
    user: str = ""
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
    #: the content digest of the applied version ("" from an older client)
    digest: str = ""
    #: set by Redis when the report arrives (Redis's clock)
    reported_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The report as sent (``user`` and ``reported_ms`` are written by
        Redis); long texts are cut so it stays within MAX_REPORT_BYTES."""
        # shallow, in field order (dataclasses.asdict deep-copies: most of a
        # report's cost when a process reports hundreds of handles at once)
        data = {name: getattr(self, name) for name in _SENT_FIELDS}
        data["extra"] = dict(self.extra)
        for name in ("last_error", "name", "host"):
            data[name] = data[name][:_MAX_TEXT]
        out = dumps(data)
        if len(out.encode()) > MAX_REPORT_BYTES:
            data["extra"] = {"truncated": True}
            data["last_error"] = data["last_error"][:200]
            data["name"] = data["name"][:200]
            out = dumps(data)
        return out

    @classmethod
    def from_json(cls, worker: str, raw: str | bytes) -> WorkerReport:
        """The report as listed; a body that is not a report (a worker's user
        may ``HSET`` its own report key directly, without the library's
        checks) becomes a report of version 0 saying so in ``last_error``,
        so one bad body cannot break the listing of the whole fleet."""
        try:
            data = loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return cls(worker, "", 0, "", last_error="unreadable report: not a JSON object")
        known = {k: v for k, v in data.items() if k in _FIELD_TYPES and k != "id"}
        wrong = sorted(k for k, v in known.items() if not _typed(v, _FIELD_TYPES[k]))
        if wrong:
            user = known.get("user")
            return cls(
                worker,
                "",
                0,
                "",
                user=user if isinstance(user, str) else "",
                last_error=f"unreadable report: wrong type of {', '.join(wrong)}"[:_MAX_TEXT],
            )
        known.setdefault("namespace", "")
        known.setdefault("version", 0)
        known.setdefault("epoch", "")
        return cls(worker, **known)


#: the JSON type each field of a report must have (int fields: not a bool;
#: float fields: an int too); a field of another annotation fails here, at import
_KINDS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}
_KINDS["dict[str, Any]"] = dict
_FIELD_TYPES: dict[str, type] = {
    name: _KINDS[str(f.type)] for name, f in WorkerReport.__dataclass_fields__.items()
}


def _typed(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def report_op(namespace: str, report: WorkerReport, ttl_s: float) -> Op[int]:
    """Send ``report``, filed under its ``user`` (``default`` if empty)."""
    args = (report.id, report.to_json(), _ttl_ms(ttl_s), report.user or "default")
    return int((yield FCall("hp_report", namespace, args)))


def _ttl_ms(ttl_s: float) -> str:
    return str(min(MAX_TTL_MS, max(1, int(ttl_s * 1000))))


def reports_op(namespace: str, reports: Sequence[WorkerReport], ttl_s: float, user: str) -> Op[int]:
    """Send ``reports`` (several workers' of one namespace, all connecting
    as the ACL ``user``, ``default`` if empty) with ``hp_reports``: one call
    per :data:`MAX_REPORTS_PER_CALL` of them, in order.  Each call is atomic
    (a refused one files none of its reports); a refusal stops the op there,
    the calls before it stay filed.  Returns Redis's time (ms) of the last
    call, 0 when there is nothing to send (no call at all).

    A report whose ``user`` is set must be ``user``: Redis files it under
    ``user`` whatever the report says (ValueError otherwise)."""
    user = user or "default"
    for report in reports:
        if report.user not in ("", user):
            raise ValueError(
                f"report of worker {report.id!r} says ACL user {report.user!r}, "
                f"sent as {user!r}: one hp_reports call files every report under one user"
            )
    ttl_ms = _ttl_ms(ttl_s)
    now = 0
    for start in range(0, len(reports), MAX_REPORTS_PER_CALL):
        args = [ttl_ms, user]
        for report in reports[start : start + MAX_REPORTS_PER_CALL]:
            args += [report.id, report.to_json()]
        now = int((yield FCall("hp_reports", namespace, tuple(args))))
    return now


def leave_op(namespace: str, worker: str, user: str = "default") -> Op[bool]:
    reply = yield FCall("hp_leave", namespace, (worker, user))
    return bool(int(reply))


#: more pages than a walk of MAX_REPORTS can take: a server that keeps answering is broken
_MAX_PAGES = 10 * MAX_REPORTS // WORKERS_PAGE


def workers_op(namespace: str) -> Op[tuple[int, list[WorkerReport]]]:
    """Redis's time (ms) and the live workers' reports, by id (then user),
    read page by page (each ``hp_workers`` call is bounded work; a report
    seen twice during the walk counts once)."""
    found: dict[tuple[str, str], WorkerReport] = {}
    cursor = "0"
    for _ in range(_MAX_PAGES):
        reply = yield FCall("hp_workers", namespace, (cursor, str(WORKERS_PAGE)), readonly=True)
        now, cursor = int(reply[0]), text(reply[1])
        for i in range(2, len(reply), 2):
            report = WorkerReport.from_json(text(reply[i]), reply[i + 1])
            found[(report.id, report.user)] = report
        if cursor == "0":
            return now, [found[key] for key in sorted(found)]
    raise ProtocolError(f"hp_workers on {namespace!r} did not finish in {_MAX_PAGES} pages")


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


def _real(report: WorkerReport, head: Head | None) -> bool:
    """Whether a report's version can be Redis's (see :func:`convergence`)."""
    if head is None or report.epoch != head.epoch:
        return True
    if report.version > head.version:
        return False
    if report.version == head.version and report.digest and head.digest:
        return report.digest == head.digest
    return True


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def convergence(
    namespace: str,
    target: int,
    epoch: str,
    reports: Sequence[WorkerReport],
    head: Head | None = None,
) -> Convergence:
    """Summarise reports against ``target`` (a version of history ``epoch``).

    With the namespace's ``head``, a worker counts as on target only if it
    runs a version Redis holds: at the head, only with the head's digest (a
    worker that applied a forged event runs another content), and never
    above the head.
    """
    on = [r for r in reports if r.epoch == epoch and r.version >= target and _real(r, head)]
    on_ids = {r.id for r in on}
    behind = tuple(r for r in reports if r.id not in on_ids)
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
    """Add a batch of assignment counts (variant name, None for the base),
    in as many calls as the library's bounds per call need."""
    pairs: list[tuple[str, int]] = []
    for name, count in counts.items():
        left = int(count)
        while left > 0:
            step = min(left, MAX_EXPOSE_INCREMENT)
            pairs.append((name or "", step))
            left -= step
    touched = 0
    for start in range(0, len(pairs), MAX_EXPOSE_PAIRS):
        args = [salt]
        for name, step in pairs[start : start + MAX_EXPOSE_PAIRS]:
            args += [name, str(step)]
        touched += int((yield FCall("hp_expose", namespace, tuple(args))))
    return touched


def exposures_op(namespace: str, key: str, salt: str) -> Op[dict[str | None, int]]:
    """Assignment counts of the experiment with ``salt``: variant -> count
    (redis-py decodes ``HGETALL`` as a dict, in RESP2 and RESP3 alike)."""
    reply = yield Command(namespace, ("HGETALL", key))
    out: dict[str | None, int] = {}
    prefix = f"{salt}:"
    for field_name, count in reply.items():
        name = text(field_name)
        if name.startswith(prefix):
            out[name[len(prefix) :] or None] = int(count)
    return out


#: the fields of a report a worker sends (Redis adds ``user`` and ``reported_ms``)
_SENT_FIELDS = tuple(f.name for f in fields(WorkerReport) if f.name not in ("user", "reported_ms"))
