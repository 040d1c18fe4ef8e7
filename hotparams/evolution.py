"""How a namespace's schema evolves across releases (I/O-free).

Registering is monotone (the Lua library enforces it for every writer, see
``hp_register`` in ``hotparams/lua/writes.lua``):

- a field stored by an earlier release is never dropped and its value is
  never reset, whichever model registers;
- a field the model adds is stored with its rule and default;
- a stored field's rule is never changed by registering: when the model
  defines it differently (a narrower bound, another type, another default,
  even a rule compiled by another hotparams release), the stored rule stays
  and :attr:`~hotparams.Registered.kept_rules` names the field.  Changing,
  dropping or renaming a field is a migration (:meth:`hotparams.Bus.migrate`),
  which checks every stored value against the new rules first;
- a schema's identity is its rules, not the class that registered it: the
  same model imported as ``__main__`` and as ``app.params`` is one revision.

So during a rolling deploy the stored schema is the union of the releases'
fields, with the rules of whichever release stored each field first; the
Lua rules of the union apply to every writer, and each worker validates
with its own model (fields it does not know are ignored; fields not stored
yet take the model's default, without a write).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["extended_rules", "migration_rules"]

#: the part of a rules document that names the class, not the schema
MODEL_KEY = "model"
#: parts of a rules document that belong to the namespace, not to a model:
#: a migration to another model keeps them
NAMESPACE_KEYS = ("allow_raw_writes",)


def extended_rules(
    stored: Mapping[str, Any], model: Mapping[str, Any]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The stored rules extended with what ``model``'s rules add, and the
    names whose stored rule differs from the model's (kept as stored)."""
    out = dict(stored)
    fields = dict(stored["fields"])
    kept: list[str] = []
    for name, rule in model["fields"].items():
        if name not in fields:
            fields[name] = rule
        elif fields[name] != rule:
            kept.append(name)
    for key, value in model.items():
        if key in ("fields", MODEL_KEY):
            continue
        if key not in out:
            out[key] = value
        elif out[key] != value:
            kept.append(f"@{key}")
    out["fields"] = fields
    return out, tuple(kept)


def migration_rules(
    stored: Mapping[str, Any],
    model: Mapping[str, Any],
    drop: Sequence[str],
    rename: Mapping[str, str],
) -> dict[str, Any]:
    """The rules a migration to ``model`` stores: the model's, plus every
    stored field the model lacks that is neither dropped nor renamed (kept
    with its stored rule: only an explicit ``drop`` drops a field), plus the
    namespace's own options (``allow_raw_writes``)."""
    out = dict(model)
    for key in NAMESPACE_KEYS:
        if key in stored and key not in out:
            out[key] = stored[key]
    fields = dict(model["fields"])
    for name, rule in stored["fields"].items():
        if name not in fields and name not in drop and name not in rename:
            fields[name] = rule
    out["fields"] = fields
    return out
