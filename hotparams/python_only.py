"""What only Python can check in a model (I/O-free).

The Lua rules (compiled from the model's JSON schema by
:mod:`hotparams.schema`) check types, choices, bounds and lengths at every
depth.  A JSON schema does not show everything pydantic checks: a field
validator, a model validator, an ``AfterValidator`` in an ``Annotated``
type, a type with its own parsing (``datetime``, ``Decimal``, ``UUID``,
``dict[int, ...]`` keys), strict mode, whitespace stripping.  This module
finds those by walking the model's fields and annotations, so the rules
can mark them Python-only and Redis refuses raw writers on them.

It errs on the side of "Python-only": a type it does not know is one.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

__all__ = ["field_reasons", "model_reason"]

_PLAIN = (int, float, str, bool, type(None))
_SEQUENCES = {list, tuple, set, frozenset, Sequence, Iterable, typing.Sequence}
_MAPPINGS = {dict, Mapping, typing.Mapping}
#: annotated-types constraints the JSON schema (hence the rules) carries
_CONSTRAINTS = (
    annotated_types.Gt,
    annotated_types.Ge,
    annotated_types.Lt,
    annotated_types.Le,
    annotated_types.MultipleOf,
    annotated_types.MinLen,
    annotated_types.MaxLen,
    annotated_types.Len,
    annotated_types.Interval,
)
#: attributes of pydantic's general metadata that the rules carry (or that
#: only relax what the rules already refuse, like allow_inf_nan)
_HARMLESS_METADATA = {"allow_inf_nan", "coerce_numbers_to_str"}


def model_reason(model: type[BaseModel]) -> str | None:
    """Why the namespace as a whole is Python-only (model validators,
    strict mode), or None."""
    decorators = model.__pydantic_decorators__
    names = sorted({*decorators.model_validators, *decorators.root_validators})
    if names:
        # no "; " in the text: it separates the problems of an HP_INVALID reply
        return (
            f"model validator {', '.join(names)}, which Redis cannot run: "
            "declare ordering rules as hotparams.Check"
        )
    if model.model_config.get("strict"):
        return "strict mode"
    return None


def field_reasons(model: type[BaseModel], seen: set[type] | None = None) -> dict[str, str]:
    """Field name -> why Python alone can check it, for the fields that need it."""
    seen = {model} if seen is None else seen
    out: dict[str, set[str]] = {}
    decorators = model.__pydantic_decorators__
    validators: dict[str, Any] = {**decorators.field_validators, **decorators.validators}
    for name, dec in validators.items():
        fields = getattr(dec.info, "fields", ())
        targets = model.model_fields if "*" in fields else fields
        for field in targets:
            out.setdefault(str(field), set()).add(f"field validator {name}")
    for name, info in model.model_fields.items():
        reasons = _field_info_reasons(info, seen)
        if reasons:
            out.setdefault(name, set()).update(reasons)
    return {name: "; ".join(sorted(reasons)) for name, reasons in out.items()}


def _field_info_reasons(info: FieldInfo, seen: set[type]) -> set[str]:
    reasons = _metadata_reasons(info.metadata, seen)
    if info.annotation is not None:
        reasons |= _type_reasons(info.annotation, seen)
    return reasons


def _metadata_reasons(metadata: Iterable[Any], seen: set[type]) -> set[str]:
    reasons: set[str] = set()
    for item in metadata:
        if isinstance(item, _CONSTRAINTS):
            continue
        if isinstance(item, FieldInfo):
            reasons |= _metadata_reasons(item.metadata, seen)
            continue
        kind = type(item).__name__
        if kind.endswith("Validator"):
            reasons.add(f"an {kind}" if kind[0] in "AEIOU" else f"a {kind}")
        elif kind.endswith("Serializer") or kind == "Discriminator":
            continue  # serialisation only, or a choice the union's rules make anyway
        elif kind == "StringConstraints":
            reasons |= _string_constraints(item)
        elif kind == "Strict":
            reasons.add("strict mode")
        else:
            attrs = (
                {k for k, v in vars(item).items() if v is not None}
                if hasattr(item, "__dict__")
                else {kind}
            )
            if kind == "_PydanticGeneralMetadata" and attrs <= _HARMLESS_METADATA:
                continue
            reasons.add(f"{kind} {', '.join(sorted(attrs))}".strip())
    return reasons


def _string_constraints(item: Any) -> set[str]:
    reasons = set()
    for attr in ("strip_whitespace", "to_upper", "to_lower", "strict"):
        if getattr(item, attr, None):
            reasons.add(attr)
    if getattr(item, "pattern", None):
        reasons.add("a regex pattern")
    return reasons


def _type_reasons(tp: Any, seen: set[type]) -> set[str]:
    if tp is Any or tp in _PLAIN or tp is SecretStr or tp in _SEQUENCES or tp in _MAPPINGS:
        return set()
    origin = typing.get_origin(tp)
    if origin is not None:
        return _generic_reasons(origin, typing.get_args(tp), seen)
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            plain = all(isinstance(m.value, (str, int, float, bool)) for m in tp)
            return set() if plain else {f"enum {tp.__name__}"}
        if issubclass(tp, BaseModel):
            return _model_reasons(tp, seen)
    if dataclasses.is_dataclass(tp):
        return {f"dataclass {_name(tp)}"}
    return {f"type {_name(tp)}"}


def _generic_reasons(origin: Any, args: tuple[Any, ...], seen: set[type]) -> set[str]:
    if origin is typing.Annotated:
        return _type_reasons(args[0], seen) | _metadata_reasons(args[1:], seen)
    if origin is typing.Literal:
        return set()
    if origin is typing.Union or origin is types.UnionType or origin in _SEQUENCES:
        return set().union(set(), *(_type_reasons(a, seen) for a in args if a is not Ellipsis))
    if origin in _MAPPINGS:
        if not args:
            return set()
        key, value = args
        reasons = _type_reasons(value, seen) | _type_reasons(key, seen)
        if not _string_key(key):
            reasons.add(f"keys of type {_name(key)}")
        return reasons
    return {f"type {_name(origin)}"}


def _model_reasons(model: type[BaseModel], seen: set[type]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    reasons: set[str] = set()
    whole = model_reason(model)
    if whole:
        reasons.add(f"{model.__name__}: {whole.split(';')[0]}")
    for name, reason in field_reasons(model, seen).items():
        reasons.add(f"{model.__name__}.{name}: {reason}")
    return reasons


def _string_key(tp: Any) -> bool:
    if tp is str:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _string_key(args[0])
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return all(isinstance(m.value, str) for m in tp)
    return False


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)
