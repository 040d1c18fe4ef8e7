"""What the admin JSON API and the operators' console share: the
operations on a namespace, the status of an error (its row of
:data:`hotparams.outcomes.OUTCOMES`, the table the CLI reads too) and the
documents (JSON-able dicts) of values, changes, variants and workers.

Both are thin faces over this module: the admin API renders its results as
JSON, the console as HTML.  Every document is built from values that are
already masked (``******``) where the field is secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..bus import Bus
from ..fleet import WorkerReport
from ..messages import one_line
from ..outcomes import BadRequest, NotServed, outcome_of
from ..redact import masked
from ..snapshot import Change, write_to_json
from ..variants import VariantSet

__all__ = [
    "BadRequest",
    "NotServed",
    "Written",
    "error_message",
    "rollback",
    "set_values",
    "status_of",
    "variants_doc",
    "worker_doc",
    "written",
]


def status_of(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code of ``exc`` (500 ``internal`` if unknown)."""
    outcome = outcome_of(exc)
    return outcome.status, outcome.code


def error_message(exc: BaseException) -> str:
    """The one-line message the CLI prints for ``exc`` (without its prefix)."""
    return one_line(exc)


# ---------------------------------------------------------------- documents


def variants_doc(
    variants: VariantSet,
    secrets: frozenset[str],
    exposures: Mapping[str | None, int] | None = None,
) -> dict[str, Any]:
    """Each A/B variant: its share, how many users it lists, its overrides
    (secrets masked) and, given the counts, its exposures."""
    out: dict[str, Any] = {}
    for name, variant in sorted(variants.variants.items()):
        doc: dict[str, Any] = {
            "percent": variant.percent,
            "users": len(variant.users),
            "overrides": masked(variant.overrides, secrets),
        }
        if exposures is not None:
            doc["exposures"] = exposures.get(name, 0)
        out[name] = doc
    return out


def worker_doc(report: WorkerReport, target: int, epoch: str, now_ms: int) -> dict[str, Any]:
    """One worker as the fleet views show it; ``behind``: not on ``target``."""
    on = report.epoch == epoch and report.version >= target
    return {
        "id": report.id,
        "name": report.name,
        "host": report.host,
        "pid": report.pid,
        "version": report.version,
        "connected": report.connected,
        "lag_ms": report.lag_ms,
        "confirmed_ms": report.confirmed_ms,
        "confirmed_ago_s": max(0.0, (now_ms - report.confirmed_ms) / 1000)
        if report.confirmed_ms
        else None,
        "last_error": report.last_error,
        "behind": not on,
    }


# ---------------------------------------------------------------- writes


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a write: the new version and its audit entry."""

    namespace: str
    previous: int
    version: int
    change: Change | None

    @property
    def changed(self) -> bool:
        return self.version != self.previous

    def doc(self) -> dict[str, Any]:
        """What a write answers (the CLI's ``--json`` too)."""
        return write_to_json(self.namespace, self.previous, self.version, self.change)


def written(bus: Bus, namespace: str, write: Callable[[], int]) -> Written:
    """Run ``write`` (returning the new version) and find its audit entry."""
    before = bus.head(namespace).version
    after = write()
    change = None
    if after != before:
        recent = bus.history(namespace, limit=10)
        change = next((c for c in recent if c.version == after), None)
    previous = change.previous if change is not None else before
    return Written(namespace, previous, after, change)


def set_values(
    bus: Bus,
    namespace: str,
    values: Mapping[str, Any],
    *,
    expect_version: int | None,
    author: str,
    reason: str,
    source: str,
) -> Written:
    return written(
        bus,
        namespace,
        lambda: bus.set(
            namespace,
            values,
            expect_version=expect_version,
            author=author,
            reason=reason,
            source=source,
        ),
    )


def rollback(
    bus: Bus,
    namespace: str,
    target: int,
    *,
    expect_version: int | None,
    author: str,
    reason: str,
    source: str,
) -> Written:
    return written(
        bus,
        namespace,
        lambda: bus.rollback(
            namespace,
            target,
            expect_version=expect_version,
            author=author,
            reason=reason,
            source=source,
        ),
    )
