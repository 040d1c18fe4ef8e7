"""The one phrasing of errors, shared by every face of hotparams.

A broken rule reads the same whoever checks it: the Lua functions in Redis
(``must be <= 2 (got 5)``), a model bound to the Bus (pydantic, whose own
``Input should be less than or equal to 2`` is rephrased here), and so the
CLI, the admin API and the console, which all print :func:`one_line` of
the error they got.

:func:`field_reason` turns one pydantic error into the Lua functions'
words; :func:`one_line` is the text of an exception as one line.  No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .codec import MASK

__all__ = ["field_reason", "json_type", "number", "one_line"]


def one_line(exc: BaseException | str) -> str:
    """The message of ``exc`` as one line (what the CLI prints after
    ``hotparams: error:``, the admin API's ``message``, the console's flash)."""
    return " ".join(str(exc).split())


def number(value: float) -> str:
    """A number as Lua writes it (``%.14g``): ``2``, ``0.5``, ``1e+20``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return format(value, ".14g")


def json_type(value: Any) -> str:
    """The JSON type name of a Python value, as the Lua checks name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _got(value: Any, secret: bool) -> str:
    if secret:
        return f" (got {MASK})"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f" (got {number(value)})"
    return ""


_BOUNDS = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}

_TYPE_ERRORS = frozenset(
    {
        "int_type",
        "int_parsing",
        "int_from_float",
        "float_type",
        "float_parsing",
        "bool_type",
        "bool_parsing",
        "string_type",
        "list_type",
        "dict_type",
        "model_type",
        "none_required",
    }
)


def field_reason(
    error: Mapping[str, Any], *, secret: bool = False, rule: Mapping[str, Any] | None = None
) -> str | None:
    """The Lua functions' words for one pydantic error (``exc.errors()``
    item, with its ``input`` when the field is not secret), or None when
    pydantic's own message is the best there is (a validator's text).

    ``rule`` is the field's stored rule (its ``types`` and ``enum``)."""
    kind = str(error.get("type", ""))
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return f"must be {op} {number(ctx[key])}{_got(value, secret)}"
    if kind == "multiple_of":
        return f"must be a multiple of {number(ctx['multiple_of'])}{_got(value, secret)}"
    length = ctx.get("actual_length")
    if length is None and isinstance(value, str | list | tuple) and not secret:
        length = len(value)
    counted = f" (got {length})" if length is not None else ""
    if kind == "string_too_short":
        return f"must be at least {ctx['min_length']} characters{counted}"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters{counted}"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} items{counted}"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items{counted}"
    if rule is not None and kind in ("literal_error", "enum") and rule.get("enum"):
        names = ", ".join(orjson.dumps(e).decode() for e in rule["enum"])
        return f"must be one of {names}"
    if rule is not None and kind in _TYPE_ERRORS and rule.get("types") and "input" in error:
        return f"expected {' or '.join(rule['types'])}, got {json_type(value)}"
    return None
