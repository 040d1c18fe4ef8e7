"""``hotparams status NS`` and the ``--wait`` of the write verbs: which
version each live worker of a namespace runs.

Workers are the Live handles that report with ``hp_report`` (when they
apply a version and on a heartbeat); a report expires by itself, so a
killed worker drops out after its time to live.  ``--wait`` polls
``Bus.convergence`` until every live worker runs the new version or a
newer one of the same history, or the timeout passes (exit 7).  With no
live worker at all there is nothing to wait for: it says so and succeeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..bus import Bus
from ..fleet import Convergence, WorkerReport, convergence
from .context import JsonOpt, NamespaceArg, NotConverged, State, state_of
from .render import iso_time, local_time, print_json, safe
from .values import scrub

__all__ = ["Waited", "secret_values", "status", "wait_for"]

#: first and longest pause between two polls of ``--wait``
POLL_FIRST = 0.02
POLL_MAX = 0.25
#: laggards named in the one-line error of ``--wait``
NAMED = 5
#: workers ``status`` lists without ``--all`` (those behind, disconnected or failing first)
STATUS_ROWS = 50


# ------------------------------------------------------------------ reading


def secret_values(bus: Bus, namespace: str, secret_fields: frozenset[str]) -> frozenset[str]:
    """The current secret values of a namespace (base and variants), to scrub
    from text that workers wrote."""
    if not secret_fields:
        return frozenset()
    stored = bus.get(namespace)
    found = {str(v) for k, v in stored.values.items() if k in secret_fields}
    for variant in stored.variants.variants.values():
        found |= {str(v) for k, v in variant.overrides.items() if k in secret_fields}
    return frozenset(s for s in found if s)


@dataclass(frozen=True, slots=True)
class Waited:
    """What ``--wait`` found: the last convergence read, and how long it took."""

    conv: Convergence
    waited_s: float
    timeout_s: float

    @property
    def complete(self) -> bool:
        """Every live worker is on the target; vacuously so with none."""
        return self.conv.workers == 0 or self.conv.complete


def wait_for(bus: Bus, namespace: str, version: int, timeout: float) -> Waited:
    """Poll ``bus.convergence(namespace, version)`` until complete or ``timeout``."""
    started = time.monotonic()
    deadline = started + timeout
    pause = POLL_FIRST
    while True:
        conv = bus.convergence(namespace, version)
        now = time.monotonic()
        if conv.workers == 0 or conv.complete or now >= deadline:
            return Waited(conv, now - started, timeout)
        time.sleep(min(pause, deadline - now))
        pause = min(POLL_MAX, pause * 2)


# ------------------------------------------------------------------ text


def ms_text(ms: float | None) -> str:
    """A lag: ``4 ms``, ``6.5 ms``, ``0.42 ms``, ``1.2 s``."""
    if ms is None:
        return "-"
    if ms >= 999.5:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.3g} ms"


def age_text(now_ms: int, then_ms: int) -> str:
    """How long ago, by Redis's clock: ``3 s ago``, ``4 min ago``."""
    if then_ms <= 0:
        return "-"
    seconds = max(0.0, (now_ms - then_ms) / 1000)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def _why_behind(report: WorkerReport, target: int) -> str:
    """``v11``, ``v11, disconnected``, ``v12 of another history``."""
    parts = [f"v{report.version}"]
    if report.version >= target:  # a version number of another epoch
        parts[0] += " of another history"
    if not report.connected:
        parts.append("disconnected")
    return ", ".join(parts)


def convergence_line(conv: Convergence) -> Text:
    """``3/4 workers on v12, p50 4 ms, p99 9 ms``."""
    if conv.workers == 0:
        return Text(f"no live workers report on {conv.namespace}", style="dim")
    text = Text(
        f"{conv.on_target}/{conv.workers} workers on v{conv.target}",
        style="green" if conv.complete else "yellow",
    )
    if conv.lag_p50_ms is not None:
        text.append(f", p50 {ms_text(conv.lag_p50_ms)}, p99 {ms_text(conv.lag_p99_ms)}")
    return text


def laggards(conv: Convergence) -> str:
    """``web-3:977 (v11, disconnected), ...`` (the first few, then a count)."""
    named = [f"{safe(r.id)} ({_why_behind(r, conv.target)})" for r in conv.behind[:NAMED]]
    more = len(conv.behind) - NAMED
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def _worker_label(report: WorkerReport) -> str:
    """The id, plus host, pid and name where the id does not already say them."""
    extra = []
    if report.host and report.pid and not report.id.startswith(f"{report.host}:{report.pid}"):
        extra.append(f"{report.host}:{report.pid}")
    if report.name and not report.id.endswith(f":{report.name}"):
        extra.append(report.name)
    return f"{report.id} ({' '.join(extra)})" if extra else report.id


def workers_table(
    reports: list[WorkerReport], conv: Convergence, now_ms: int, secrets: frozenset[str]
) -> Table:
    """worker | version | connected | lag | confirmed | error; laggards highlighted."""
    behind = {r.id for r in conv.behind}
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("worker", style="bold")
    table.add_column("version")
    table.add_column("connected")
    table.add_column("lag", justify="right")
    table.add_column("confirmed")
    table.add_column("error", overflow="fold")
    for r in reports:
        late = r.id in behind
        version = Text(str(r.version), style="red" if late else "")
        if late:
            version.append(" (other history)" if r.version >= conv.target else " (behind)")
        table.add_row(
            Text(safe(scrub(_worker_label(r), secrets))),
            version,
            Text("yes") if r.connected else Text("no", style="red"),
            ms_text(r.lag_ms),
            age_text(now_ms, r.confirmed_ms),
            Text(safe(scrub(r.last_error, secrets)), style="red"),
            style="yellow" if late or not r.connected else None,
        )
    return table


# ------------------------------------------------------------------ JSON


def convergence_doc(conv: Convergence) -> dict[str, Any]:
    return {
        "target": conv.target,
        "workers": conv.workers,
        "on_target": conv.on_target,
        "behind": [r.id for r in conv.behind],
        "disconnected": [r.id for r in conv.disconnected],
        "lag_p50_ms": conv.lag_p50_ms,
        "lag_p99_ms": conv.lag_p99_ms,
        "lag_max_ms": conv.lag_max_ms,
        "complete": conv.complete,
    }


def waited_doc(waited: Waited) -> dict[str, Any]:
    return {
        **convergence_doc(waited.conv),
        "complete": waited.complete,
        "waited_s": round(waited.waited_s, 3),
        "timeout_s": waited.timeout_s,
    }


def worker_doc(report: WorkerReport, on_target: bool, secrets: frozenset[str]) -> dict[str, Any]:
    doc = {f.name: getattr(report, f.name) for f in fields(report) if f.name != "namespace"}
    doc["on_target"] = on_target
    return {k: scrub(v, secrets) for k, v in doc.items()}


# ------------------------------------------------------------------ --wait


def report_wait(
    state: State, namespace: str, version: int, timeout: float, doc: dict[str, Any] | None
) -> None:
    """The ``--wait`` of a write verb: wait, then print the outcome (into
    ``doc`` for ``--json``, printed here); exit 7 when incomplete."""
    waited = wait_for(state.bus(), namespace, version, timeout)
    conv = waited.conv
    if doc is not None:
        print_json(state.out, {**doc, "wait": waited_doc(waited)})
    elif conv.workers == 0:
        state.out.print(
            f"{namespace}: no live workers report on this namespace: nothing to wait for"
        )
    elif waited.complete:
        line = Text(f"{namespace}: ")
        line.append_text(convergence_line(conv))
        line.append(f" (after {waited.waited_s:.1f} s)")
        state.out.print(line)
    if not waited.complete:
        behind = len(conv.behind)
        raise NotConverged(
            f"not every worker applied version {version} of {namespace!r} within "
            f"{timeout:g} s: {behind} of {conv.workers} behind: {laggards(conv)}"
        )


# ------------------------------------------------------------------ status


def shown_workers(
    reports: list[WorkerReport], conv: Convergence, limit: int | None
) -> list[WorkerReport]:
    """The rows of ``status``: every worker behind, disconnected or with an
    error first, then the others, ``limit`` in all (None: every one), by id."""
    if limit is None or len(reports) <= limit:
        return reports
    behind = {r.id for r in conv.behind}
    first = [r for r in reports if r.id in behind or not r.connected or r.last_error]
    rest = [r for r in reports if not (r.id in behind or not r.connected or r.last_error)]
    return sorted((first + rest)[:limit], key=lambda r: r.id)


def status(
    ctx: typer.Context,
    namespace: NamespaceArg,
    json_out: JsonOpt = False,
    every: Annotated[
        bool,
        typer.Option(
            "--all", help=f"List every worker (else at most {STATUS_ROWS}, laggards first)."
        ),
    ] = False,
) -> None:
    """The current version of NS and the live workers: which version each runs, lag, errors."""
    state = state_of(ctx)
    bus = state.bus()
    head = bus.head(namespace)
    now_ms, reports = bus.fleet(namespace)
    conv = convergence(namespace, head.version, head.epoch, reports, head)
    secrets = (
        secret_values(bus, namespace, bus.secret_fields(namespace)) if reports else frozenset()
    )
    if json_out:
        behind = {r.id for r in conv.behind}
        doc = {
            "namespace": namespace,
            "version": head.version,
            "epoch": head.epoch,
            "committed_ms": head.committed_ms,
            "committed_at": iso_time(head.committed_ms),
            "now_ms": now_ms,
            "workers": [worker_doc(r, r.id not in behind, secrets) for r in reports],
            "convergence": convergence_doc(conv),
        }
        print_json(state.out, doc)
        return
    header = Text.assemble(
        (namespace, "bold"),
        f"  version {head.version}  epoch {head.epoch}  committed {local_time(head.committed_ms)}",
    )
    parts: list[RenderableType] = [header]
    if reports:
        rows = shown_workers(reports, conv, None if every else STATUS_ROWS)
        parts.append(workers_table(rows, conv, now_ms, secrets))
        if len(rows) < len(reports):
            hidden = len(reports) - len(rows)
            behind_ids = {b.id for b in conv.behind}
            late = len(behind_ids) - sum(1 for r in rows if r.id in behind_ids)
            where = f"{late} of them behind" if late else f"on v{conv.target}"
            parts.append(Text(f"... and {hidden} more workers, {where} (--all lists them)", "dim"))
    parts.append(convergence_line(conv))
    state.out.print(Group(*parts))
