"""Command-line values and stored rules, free of I/O.

``key=value`` arguments are parsed by the field's type in the stored rules,
with the same rule as ``FCALL hp_set`` so the CLI and redis-cli agree:

- a field whose types include ``string`` takes the text as it is
  (``model=gpt-4o``), except ``null`` for a field that also allows null, and
  a quoted JSON string (``'"  padded  "'``), which is decoded;
- any other field takes JSON: ``0.9``, ``42``, ``true``, ``null``,
  ``'["\\n"]'``, ``'{"a": 1}'``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..codec import MASK
from ..errors import InvalidParams
from ..outcomes import UsageProblem

__all__ = [
    "UsageProblem",
    "field_rules",
    "parse_assignments",
    "parse_value",
    "scrub",
    "secret_names",
    "shown",
    "split_assignments",
]

_HINTS = {
    "boolean": "true or false",
    "integer": "a whole number",
    "number": "a number",
    "array": 'a JSON array, e.g. \'["a", "b"]\'',
    "object": "a JSON object, e.g. '{\"k\": 1}'",
    "null": "null",
    "any": "a JSON value (quote a string: '\"text\"')",
}


def field_rules(rules: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    fields = rules.get("fields", {})
    return dict(fields) if isinstance(fields, Mapping) else {}


def secret_names(rules: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(n for n, r in field_rules(rules).items() if r.get("secret"))


def shown(value: Any) -> str:
    """One value as compact JSON text, for tables and diffs (``MASK`` stays bare)."""
    if value == MASK:
        return MASK
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def scrub(value: Any, secrets: frozenset[str]) -> Any:
    """``value`` (text, or JSON-like data) with every secret value in it masked.

    For text the CLI did not write itself (a worker's last error), which
    might quote a secret; ``secrets`` are the secret values to hide.
    """
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):
            if secret:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, Mapping):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return value


def split_assignments(items: Sequence[str]) -> list[tuple[str, str]]:
    """``["a=1", "b=x=y"]`` -> ``[("a", "1"), ("b", "x=y")]``; a usage error otherwise."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in items:
        name, eq, text = item.partition("=")
        if not eq or not name:
            raise UsageProblem(
                f"{item!r} is not key=value (for example temperature=0.9 or model=gpt-4o)"
            )
        if name in seen:
            raise UsageProblem(f"{name} is given twice")
        seen.add(name)
        out.append((name, text))
    return out


def _not_json(text: str) -> bool:
    try:
        json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return True
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_value(text: str, rule: Mapping[str, Any]) -> Any:
    """The value ``text`` means for a field with ``rule``; ValueError with a reason."""
    types = list(rule.get("types") or ["any"])
    if "string" in types and not (text == "null" and len(types) > 1):
        if text.startswith('"') and not _not_json(text):
            decoded = json.loads(text)
            if isinstance(decoded, str):
                return decoded
        return text
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        expected = " or ".join(_HINTS.get(t, t) for t in types)
        got = MASK if rule.get("secret") else repr(text)
        raise ValueError(f"expected {expected}, got {got}") from None


def parse_assignments(
    namespace: str, items: Sequence[str], rules: Mapping[str, Any]
) -> dict[str, Any]:
    """Parse ``key=value`` items by the stored rules; every problem in one InvalidParams."""
    fields = field_rules(rules)
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, text in split_assignments(items):
        rule = fields.get(name)
        if rule is None:
            problems[name] = "unknown field"
            continue
        try:
            values[name] = parse_value(text, rule)
        except ValueError as exc:
            problems[name] = str(exc)
    if problems:
        raise InvalidParams(namespace, problems)
    return values
