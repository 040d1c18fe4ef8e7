"""Encoding of parameter values: one JSON text per field, via orjson."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

__all__ = ["MASK", "dumps", "encode_value", "loads", "model_values", "revealed"]

MASK = "******"

#: how a secret value encrypted at rest starts (see hotparams/sealing.py):
#: a JSON string in a version hash or a variant's overrides
TOKEN_PREFIX = "hpenc:1:"
#: why a value that no key opens is refused
UNOPENED = (
    "encrypted, and no key of this client opens it (give it the namespace's keys: "
    "HOTPARAMS_SECRET_KEYS or connect(secret_keys=...))"
)


def is_token(value: Any) -> bool:
    """Whether ``value`` is a sealed (encrypted) secret."""
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def unopened(values: Mapping[str, Any]) -> dict[str, str]:
    """The fields of ``values`` still holding a sealed secret, each with :data:`UNOPENED`."""
    return {name: UNOPENED for name, value in values.items() if is_token(value)}


def dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


def _check_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    if isinstance(value, list):
        for item in value:
            _check_finite(item)
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item)


def revealed(value: Any) -> Any:
    """A JSON-able form of ``value`` in which secrets show their real value."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, SecretBytes):
        return value.get_secret_value().decode()
    if isinstance(value, BaseModel):
        return {name: revealed(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [revealed(item) for item in value]
    if isinstance(value, dict):
        return {str(k): revealed(v) for k, v in value.items()}
    return to_jsonable_python(value)


def encode_value(value: Any) -> str:
    """The stored JSON text of one field value (secrets revealed)."""
    plain = revealed(value)
    _check_finite(plain)
    return dumps(plain)


def model_values(params: BaseModel) -> dict[str, Any]:
    """Every field of a model instance as JSON-able values, secrets revealed."""
    return {name: revealed(getattr(params, name)) for name in type(params).model_fields}
