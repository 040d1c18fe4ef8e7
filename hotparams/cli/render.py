"""What the CLI prints: rich tables for people, JSON for scripts.

Every function here gets values that are already masked (``******``) where
the field is secret; none of them ever sees a secret value.

Whatever comes from Redis (values, field names, authors, reasons, sources,
worker ids, errors) is untrusted on a terminal: it goes through
:func:`safe`, which shows control characters as escapes, and the CLI's
consoles interpret no markup (:func:`console`), so ``[bold]`` in data is
printed as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..codec import MASK
from ..redact import terminal_safe
from ..snapshot import Change, FieldChange
from ..variants import BUCKETS
from .values import field_rules, shown

__all__ = [
    "change_block",
    "changes_table",
    "console",
    "constraints_of",
    "local_time",
    "print_json",
    "safe",
    "schema_table",
    "type_of",
    "values_table",
    "variants_summary",
]

OLD = "red"
NEW = "green"
DIM = "dim"


def console(*, stderr: bool = False) -> Console:
    """A console that prints data as it is: no markup, no emoji codes, no highlighting."""
    return Console(stderr=stderr, highlight=False, markup=False, emoji=False)


def safe(text: object) -> str:
    """Data from Redis as text a terminal shows and never obeys."""
    return terminal_safe(str(text))


def local_time(ms: int) -> str:
    """A commit time (epoch ms) as local wall-clock time."""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="milliseconds")


def print_json(console: Console, doc: Any, *, compact: bool = False) -> None:
    indent = None if compact else 2
    text = json.dumps(doc, ensure_ascii=False, indent=indent)
    console.file.write(text + "\n")
    console.file.flush()


def value_text(value: Any, style: str = "") -> Text:
    if value == MASK:
        return Text(MASK, style=DIM)
    return Text(safe(shown(value)), style=style)


# ------------------------------------------------------------------ values


def values_table(
    values: Mapping[str, Any],
    defaults: Mapping[str, Any],
    changed: frozenset[str],
    *,
    beside: str = "default",
) -> Table:
    """field | value | default (the default only where the value differs).

    ``beside`` names the third column (``variant which`` shows the base there).
    """
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_column(beside, style=DIM)
    for name in sorted(values):
        default = value_text(defaults[name]) if name in changed and name in defaults else ""
        style = "cyan" if name in changed else ""
        table.add_row(Text(safe(name)), value_text(values[name], style), default)
    return table


# ------------------------------------------------------------------ changes


def _arrow(change: FieldChange, initial: bool) -> Text:
    if initial and change.old is None:
        return value_text(change.new, NEW)
    return Text.assemble(value_text(change.old, OLD), " -> ", value_text(change.new, NEW))


def changes_table(changes: Mapping[str, FieldChange], *, initial: bool = False) -> RenderableType:
    """One aligned, indented line per field: ``name  old -> new`` (old red, new green).

    ``initial``: the first values of a namespace, shown without ``null ->``.
    """
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, change in changes.items():
        grid.add_row(Text(safe(name)), _arrow(change, initial))
    return Padding(grid, (0, 0, 0, 2), expand=False)


def _what(change: Change) -> str:
    return f"rollback to {change.target}" if change.op == "rollback" else change.op


def change_block(change: Change) -> RenderableType:
    """One change as ``history`` and ``watch`` print it: a header line, then
    one aligned line per field."""
    header = Text.assemble(
        (f"v{change.version}", "bold"),
        "  ",
        local_time(change.committed_ms),
        "  ",
        (safe(_what(change)), "magenta"),
        f"  by {safe(change.author or '-')} via {safe(change.source or '-')}",
    )
    if change.reason:
        header.append(f"  {safe(json.dumps(change.reason, ensure_ascii=False))}", style=DIM)
    parts: list[RenderableType] = [header]
    if change.damaged:
        parts.append(
            Text(
                f"  damaged: {', '.join(change.damaged)} not UTF-8 (shown escaped) or not JSON",
                style="yellow",
            )
        )
    if change.changes:
        parts.append(changes_table(change.changes, initial=change.op == "init"))
    if change.settings:
        parts.append(changes_table(change.settings))
    if change.variants is not None or change.op == "variant":
        parts.append(Padding(variants_summary(change.variants), (0, 0, 0, 2), expand=False))
    return parts[0] if len(parts) == 1 else Group(*parts)


def variants_summary(doc: Mapping[str, Any] | None) -> Text:
    """The A/B variants after a change, from its audit entry:
    ``variants: cool 10%, vip 0% + 2 users``."""
    variants = (doc or {}).get("variants") or {}
    if not variants:
        return Text.assemble(("variants", "bold"), ": none")
    shown = []
    for name, spec in sorted(variants.items()):
        share = sum(end - start for start, end in spec.get("buckets") or []) * 100 / BUCKETS
        users = len(spec.get("users") or ())
        listed = f" + {users} user{'' if users == 1 else 's'}" if users else ""
        shown.append(f"{safe(name)} {share:g}%{listed}")
    return Text.assemble(("variants", "bold"), ": ", ", ".join(shown))


# ------------------------------------------------------------------ schema


def type_of(rule: Mapping[str, Any]) -> str:
    """A field's type as people read it: ``number``, ``array of string | null``."""
    if rule.get("anyof"):
        return " | ".join(type_of(alt) for alt in rule["anyof"])
    types = [str(t) for t in rule.get("types") or ["any"]]
    item = rule.get("item")
    items = [type_of(item)] if isinstance(item, Mapping) else rule.get("items")
    if "array" in types and items:
        types = [f"array of {' | '.join(items)}" if t == "array" else t for t in types]
    return " | ".join(types)


def constraints_of(rule: Mapping[str, Any]) -> str:
    """A field's rules as people read them: ``>= 0, <= 2``, ``one of "a", "b"``."""
    parts: list[str] = []
    if "enum" in rule:
        parts.append("one of " + ", ".join(shown(e) for e in rule["enum"]))
    for key, label in (("min", ">="), ("xmin", ">"), ("max", "<="), ("xmax", "<")):
        if key in rule:
            parts.append(f"{label} {rule[key]}")
    if "multiple" in rule:
        parts.append(f"multiple of {rule['multiple']}")
    for key, label in (("minlen", "min length"), ("maxlen", "max length")):
        if key in rule:
            parts.append(f"{label} {rule[key]}")
    for key, label in (("minitems", "min items"), ("maxitems", "max items")):
        if key in rule:
            parts.append(f"{label} {rule[key]}")
    if rule.get("secret"):
        parts.append("secret, encrypted at rest" if rule.get("sealed") else "secret")
    return ", ".join(parts)


def schema_table(rules: Mapping[str, Any], defaults: Mapping[str, Any]) -> Table:
    """field | type | default | rules [| description, when any field has one]."""
    fields = field_rules(rules)
    described = any(rule.get("description") for rule in fields.values())
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("type")
    table.add_column("default")
    table.add_column("rules")
    if described:
        table.add_column("description", style=DIM)
    for name, rule in fields.items():
        if name in defaults:
            default = value_text(defaults[name])
        else:  # an encrypted secret's default is not stored (it would be in clear)
            default = Text("(not stored)" if rule.get("sealed") else "required", DIM)
        row: list[RenderableType] = [
            Text(safe(name)),
            Text(safe(type_of(rule))),
            default,
            Text(safe(constraints_of(rule))),
        ]
        if described:
            row.append(Text(safe(rule.get("description", ""))))
        table.add_row(*row)
    return table
