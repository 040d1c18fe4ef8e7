"""What the console's pages show, read from Redis and already masked:
a namespace's values with their schema, its variants, its fleet.

Nothing here returns a secret value: values, overrides and diffs carry
``******`` for every secret field, and a worker's last error is scrubbed of
the current secret values before it reaches a page.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ..bus import Bus
from ..cli.values import field_rules, scrub, shown
from ..codec import MASK, loads
from ..flask.operations import variants_doc, worker_doc
from ..fleet import Convergence
from ..redact import masked
from ..snapshot import Change, Snapshot
from .forms import FormField, form_fields

__all__ = [
    "FleetView",
    "NamespaceView",
    "Summary",
    "fleet_view",
    "namespace_names",
    "namespace_view",
    "summary",
    "text_of",
]


def text_of(value: Any) -> str:
    """A value as a page shows it: compact JSON (``******`` stays bare)."""
    return MASK if value == MASK else shown(value)


def namespace_names(bus: Bus) -> list[str]:
    """Every namespace in this Redis (:meth:`Bus.namespaces`), by name."""
    return sorted(info.namespace for info in bus.namespaces())


@dataclass(frozen=True, slots=True)
class Summary:
    """One line of the Namespaces page."""

    name: str
    version: int
    epoch: str
    last: Change | None
    convergence: Convergence | None


def summary(bus: Bus, namespace: str) -> Summary:
    head = bus.head(namespace)
    recent = bus.history(namespace, limit=1)
    conv = bus.convergence(namespace, head.version)
    return Summary(namespace, head.version, head.epoch, recent[0] if recent else None, conv)


@dataclass(frozen=True, slots=True)
class NamespaceView:
    """A namespace as its page shows it (secrets masked)."""

    name: str
    version: int
    epoch: str
    committed_ms: int
    rules: dict[str, Any]
    values: dict[str, Any]  # masked
    fields: list[FormField]
    variants: dict[str, Any]  # variants_doc, with exposures
    secrets: frozenset[str]
    base_exposures: int
    changed: frozenset[str]  # fields whose value is not their default (secrets left out)
    variant_users: dict[str, list[str]]  # each variant's allow-list

    def default_text(self, name: str) -> str:
        rule = field_rules(self.rules).get(name, {})
        if "default" not in rule:
            return ""
        return MASK if name in self.secrets else text_of(loads(rule["default"]))


def namespace_view(bus: Bus, namespace: str, snap: Snapshot[Any] | None = None) -> NamespaceView:
    snap = snap or bus.get(namespace)
    rules = bus.rules(namespace)
    secrets = frozenset(n for n, r in field_rules(rules).items() if r.get("secret"))
    values = masked(snap.values, secrets)
    exposures = bus.exposures(namespace) if snap.variants.variants else {}
    changed = frozenset(
        name
        for name, rule in field_rules(rules).items()
        if "default" in rule and name not in secrets and values.get(name) != loads(rule["default"])
    )
    return NamespaceView(
        name=namespace,
        version=snap.version,
        epoch=snap.epoch,
        committed_ms=snap.committed_ms,
        rules=rules,
        values=values,
        fields=form_fields(rules, values),
        variants=variants_doc(snap.variants, secrets, exposures),
        secrets=secrets,
        base_exposures=exposures.get(None, 0),
        changed=changed,
        variant_users={n: sorted(v.users) for n, v in snap.variants.variants.items()},
    )


def secret_values(bus: Bus, namespace: str) -> frozenset[str]:
    """The current secret values as text, to scrub them from worker errors."""
    snap = bus.get(namespace)
    rules = bus.rules(namespace)
    out: set[str] = set()
    for name, rule in field_rules(rules).items():
        if rule.get("secret") and name in snap.values:
            value = snap.values[name]
            out.add(value if isinstance(value, str) else json.dumps(value))
    return frozenset(v for v in out if v)


@dataclass(frozen=True, slots=True)
class FleetView:
    """Every worker of a namespace against its current version."""

    namespace: str
    version: int
    workers: list[dict[str, Any]]
    convergence: Convergence

    @property
    def on_target(self) -> int:
        return self.convergence.on_target

    @property
    def complete(self) -> bool:
        return self.convergence.complete

    def doc(self) -> dict[str, Any]:
        conv = self.convergence
        return {
            "namespace": self.namespace,
            "version": self.version,
            "workers": self.workers,
            "on_target": conv.on_target,
            "total": conv.workers,
            "complete": conv.complete,
            "lag_p50_ms": conv.lag_p50_ms,
            "lag_p99_ms": conv.lag_p99_ms,
        }


def fleet_view(bus: Bus, namespace: str) -> FleetView:
    head = bus.head(namespace)
    reports = bus.workers(namespace)
    conv = bus.convergence(namespace, head.version)
    hide = secret_values(bus, namespace) if any(r.last_error for r in reports) else frozenset()
    now = int(time.time() * 1000)
    workers = []
    for report in reports:
        doc = worker_doc(report, head.version, head.epoch, now)
        doc["last_error"] = scrub(doc["last_error"], hide)
        workers.append(doc)
    workers.sort(key=lambda w: (not w["behind"], w["id"]))  # laggards first
    return FleetView(namespace, head.version, workers, conv)


def wait_for_fleet(bus: Bus, namespace: str, version: int, timeout: float) -> Convergence:
    """Poll the fleet until every live worker runs ``version`` or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        conv = bus.convergence(namespace, version)
        if conv.complete or conv.workers == 0 or time.monotonic() >= deadline:
            return conv
        time.sleep(0.05)
