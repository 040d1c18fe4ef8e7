"""What a live handle serves (I/O-free): a :class:`View`, the base snapshot
and, once per A/B variant, the base merged with that variant's overrides
(validated by the model, :func:`hotparams.variants.validate_merged`), so
that ``for_user`` only picks one; a handle swaps the whole view as one
reference.  Also the snapshot of the model's defaults, and whether a
change concerns some fields (for change callbacks)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from .codec import model_values
from .schema import ParamSchema
from .snapshot import Snapshot, frozen_mapping
from .variants import validate_variants

__all__ = ["View", "build_view", "defaults_snapshot", "touches"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class View(Generic[M]):
    """What a handle serves, replaced whole as one reference: the base
    snapshot and the base merged with each A/B variant of the same version.

    ``applied_ms`` is when this process applied the version (wall clock)
    and ``lag_ms`` how long after its commit (or, for a version committed
    before the handle started, after the start) that was.
    """

    base: Snapshot[M]
    #: variant name -> the base merged with its overrides (``.variant`` = the name)
    merged: Mapping[str, Snapshot[M]]
    applied_ms: int = 0
    lag_ms: float = 0.0


def build_view(
    schema: ParamSchema[M], base: Snapshot[M], applied_ms: int = 0, lag_ms: float = 0.0
) -> View[M]:
    """The base and one merged snapshot per variant, each validated by the model.

    InvalidParams names the variant: ``{"variant NAME FIELD": reason}``.
    """
    merged = {
        name: Snapshot(
            namespace=base.namespace,
            version=base.version,
            epoch=base.epoch,
            params=params,
            committed_ms=base.committed_ms,
            schema_rev=base.schema_rev,
            values=frozen_mapping(values),
            variant=name,
            variants=base.variants,
            digest=base.digest,
        )
        for name, (params, values) in validate_variants(
            base.namespace, schema, base.values, base.variants
        ).items()
    }
    return View(base, frozen_mapping(merged), applied_ms, lag_ms)


def defaults_snapshot(namespace: str, schema: ParamSchema[M]) -> Snapshot[M]:
    """Version 0 of no history: the model's defaults (InvalidParams if it has required fields)."""
    params = schema.validate(namespace, {})
    return Snapshot(
        namespace=namespace,
        version=0,
        epoch="",
        params=params,
        committed_ms=0,
        schema_rev=0,
        values=frozen_mapping(model_values(params)),
    )


def touches(fields: Collection[str] | None, old: Snapshot[Any] | None, new: Snapshot[Any]) -> bool:
    """Whether a change from ``old`` to ``new`` concerns any of ``fields`` (None: all)."""
    if fields is None or old is None:
        return True
    before, after = old.values, new.values
    return any(before.get(n) != after.get(n) or (n in before) != (n in after) for n in fields)
