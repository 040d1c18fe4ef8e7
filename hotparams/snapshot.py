"""Immutable values a reader holds: snapshots, history entries, diffs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from .codec import MASK
from .variants import EMPTY, VariantSet

__all__ = [
    "Change",
    "FieldChange",
    "Snapshot",
    "changes_to_json",
    "diff_values",
    "write_to_json",
]

M = TypeVar("M", bound=BaseModel)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[M]):
    """One version of a namespace, whole and immutable.

    ``params`` is a frozen instance of the namespace's model; ``values``
    holds the same values as JSON-able data (secrets revealed, so it is left
    out of ``repr``).  Keep a reference for the length of a request and every
    read sees this one version.
    """

    namespace: str
    version: int
    epoch: str
    params: M
    committed_ms: int
    schema_rev: int
    values: Mapping[str, Any] = field(repr=False, compare=False)
    variant: str | None = None
    variants: VariantSet = field(default=EMPTY, repr=False, compare=False)
    #: the content digest Redis stored with this version ("" when unknown:
    #: the model's defaults, an old cache file or library)
    digest: str = field(default="", compare=False)

    @property
    def committed_at(self) -> datetime:
        return _utc(self.committed_ms)


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field's value before and after a change (secrets are ``MASK``)."""

    old: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new}


def changes_to_json(changes: Mapping[str, FieldChange]) -> dict[str, Any]:
    """``{field: {"old": ..., "new": ...}}``: a change's fields, or a diff, as data."""
    return {name: change.to_json() for name, change in changes.items()}


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a namespace's audit history."""

    namespace: str
    version: int
    previous: int
    op: str
    author: str
    reason: str
    source: str
    committed_ms: int
    schema_rev: int
    changes: Mapping[str, FieldChange]
    target: int | None = None
    entry_id: str = ""
    #: the A/B variants document after the change (secrets masked), None
    #: when the change left the variants alone, {} when it removed them all
    variants: Mapping[str, Any] | None = None
    #: settings a ``configure`` changed (name -> old, new); empty otherwise
    settings: Mapping[str, FieldChange] = field(default_factory=dict)
    #: a ``migrate``'s fields dropped and renamed ({"drop": [...],
    #: "rename": {old: new}}); empty otherwise
    migration: Mapping[str, Any] = field(default_factory=dict)
    #: audit fields whose stored bytes were not UTF-8 (shown escaped, as
    #: ``\xed``) or not JSON (left out): the entry was written around
    #: hotparams' functions
    damaged: tuple[str, ...] = ()

    @property
    def at(self) -> datetime:
        return _utc(self.committed_ms)

    def to_json(self, epoch: str | None = None) -> dict[str, Any]:
        """The entry as JSON-able data, the one document of a change (the
        CLI's ``history --json`` and ``watch --json``, the admin API's
        history); ``epoch`` is the history it belongs to, when the caller
        knows it.  Secret values are masked already (in the audit)."""
        return {
            "namespace": self.namespace,
            "epoch": epoch,
            "version": self.version,
            "previous": self.previous,
            "op": self.op,
            "target": self.target,
            "author": self.author,
            "reason": self.reason,
            "source": self.source,
            "committed_ms": self.committed_ms,
            "committed_at": self.at.isoformat(timespec="milliseconds"),
            "schema_rev": self.schema_rev,
            "changes": changes_to_json(self.changes),
            "variants": None if self.variants is None else dict(self.variants),
            "settings": changes_to_json(self.settings),
            "migration": dict(self.migration),
            "damaged": list(self.damaged),
        }


def write_to_json(
    namespace: str, previous: int, version: int, change: Change | None
) -> dict[str, Any]:
    """What a write answers, as data (the CLI's ``--json`` of ``set``,
    ``unset``, ``rollback``, the admin API's PATCH and rollback): the new
    version, the one it follows, what changed (``change``: its audit entry,
    None when nothing changed) and, for a rollback, its ``target``."""
    doc: dict[str, Any] = {
        "namespace": namespace,
        "version": version,
        "previous": previous,
        "changed": version != previous,
        "changes": changes_to_json(change.changes) if change is not None else {},
    }
    if change is not None and change.target is not None:
        doc["target"] = change.target
    return doc


def diff_values(
    old: Mapping[str, Any], new: Mapping[str, Any], secrets: frozenset[str] = frozenset()
) -> dict[str, FieldChange]:
    """Fields whose value differs between ``old`` and ``new``; secrets masked."""
    out: dict[str, FieldChange] = {}
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after and (name in old) == (name in new):
            continue
        if name in secrets:
            before = MASK if name in old else None
            after = MASK if name in new else None
        out[name] = FieldChange(before, after)
    return out


def frozen_mapping(values: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(values))
