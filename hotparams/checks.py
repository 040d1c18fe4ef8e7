"""Cross-field checks that every writer obeys (I/O-free).

A model's validators are Python: Redis cannot run them, so a writer without
the model (a person at redis-cli, ``hotparams set`` without ``--schema``)
would be held to the per-field rules only.  Ordering rules between two
fields, the most common cross-field rule of a parameter set, can instead be
declared, and then Redis enforces them on every write (base values and
every A/B variant merged with them), and Python writers and workers check
them too::

    class ChatParams(BaseModel):
        hotparams_checks: ClassVar[tuple[Check, ...]] = (
            Check("quiet_from", "<=", "quiet_to"),
        )
        quiet_from: int = 0
        quiet_to: int = 0

A check holds when either side is null, or when the two values are not
both numbers or both strings (the field rules keep types apart).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["OPERATORS", "Check", "checks_of"]

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class Check:
    """``left OP right`` between two fields of one parameter set."""

    left: str
    op: str
    right: str

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValueError(f"check operator {self.op!r}: one of {', '.join(OPERATORS)}")

    @property
    def message(self) -> str:
        return f"{self.left} must be {self.op} {self.right}"

    def holds(self, values: Mapping[str, Any]) -> bool:
        a, b = values.get(self.left), values.get(self.right)
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        strings = isinstance(a, str) and isinstance(b, str)
        if not (numbers or strings):
            return True
        return OPERATORS[self.op](a, b)

    def as_rule(self) -> list[str]:
        return [self.left, self.op, self.right]


def checks_of(model: type) -> tuple[Check, ...]:
    """The checks a model declares in its ``hotparams_checks`` class variable."""
    declared = getattr(model, "hotparams_checks", ())
    if not isinstance(declared, (tuple, list)) or not all(isinstance(c, Check) for c in declared):
        raise TypeError(f"{model.__name__}.hotparams_checks must be a tuple of hotparams.Check")
    return tuple(declared)
