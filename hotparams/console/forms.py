"""The console's forms, free of I/O: an edit form generated from a
namespace's stored rules, and a submitted form read back into a change.

Each field becomes one input whose name (and label) is the field's name:
a number input with the rule's bounds, a select for an enum or a literal,
a toggle for a boolean, a text area for a prompt or a long text, a JSON
editor for a list, an object or a value of several types, a password input
for a secret (never filled in: empty means "unchanged").  What a person
types is parsed exactly as ``hotparams set NS field=text`` parses it
(:func:`hotparams.cli.values.parse_value`), so the messages are the CLI's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..cli.render import constraints_of, type_of
from ..cli.values import field_rules, parse_value

__all__ = ["FormField", "FormResult", "form_fields", "read_form", "value_text"]

Kind = Literal["number", "integer", "select", "toggle", "textarea", "json", "text", "secret"]

#: a string field whose rule allows this many characters gets a text area
LONG_TEXT = 400


@dataclass(frozen=True, slots=True)
class FormField:
    """One input of the edit form."""

    name: str
    kind: Kind
    text: str  # the current value as the input shows it ("" for a secret)
    type: str  # "number", "string | null", ... as ``hotparams schema`` says
    constraints: str
    description: str = ""
    default: str | None = None  # the default as text (None: no default; secrets: MASK)
    options: tuple[tuple[str, str], ...] = ()  # (value, label) of a select
    minimum: str | None = None
    maximum: str | None = None
    step: str | None = None
    maxlength: int | None = None
    nullable: bool = False
    secret: bool = False


def value_text(value: Any, rule: Mapping[str, Any]) -> str:
    """A value as the person edits it: text for a string field (JSON-quoted
    only when plain text would read back as something else), JSON otherwise."""
    types = list(rule.get("types") or ["any"])
    if isinstance(value, str) and "string" in types:
        if value == "null" and len(types) > 1:
            return json.dumps(value)
        if value.startswith('"'):
            return json.dumps(value, ensure_ascii=False)
        return value
    if value is None and "null" in types:
        return "" if _plain_null(types) else "null"
    return json.dumps(value, ensure_ascii=False)


def _plain_null(types: list[str]) -> bool:
    """A nullable number or integer field: an empty input means null."""
    return bool(set(types) - {"null"}) and set(types) - {"null"} <= {"number", "integer"}


def _kind(name: str, rule: Mapping[str, Any]) -> Kind:
    types = set(rule.get("types") or ["any"]) - {"null"}
    if rule.get("secret"):
        return "secret"
    if "enum" in rule:
        return "select"
    if types == {"boolean"}:
        return "toggle"
    if types == {"integer"}:
        return "integer"
    if types <= {"number", "integer"} and types:
        return "number"
    if types == {"string"}:
        long = int(rule.get("maxlen", LONG_TEXT + 1)) > LONG_TEXT
        return "textarea" if long or "prompt" in name else "text"
    return "json"


def form_fields(rules: Mapping[str, Any], values: Mapping[str, Any]) -> list[FormField]:
    """The edit form of a namespace: one input per field, in schema order.

    ``values`` are the current values with secrets already masked; a
    secret's input is left empty whatever they hold.
    """
    out: list[FormField] = []
    for name, rule in field_rules(rules).items():
        kind = _kind(name, rule)
        types = list(rule.get("types") or ["any"])
        secret = kind == "secret"
        current = values.get(name)
        default: str | None = None
        if "default" in rule:
            default = "******" if secret else value_text(json.loads(rule["default"]), rule)
        options: tuple[tuple[str, str], ...] = ()
        if kind == "select":
            options = tuple((value_text(e, rule), value_text(e, rule)) for e in rule["enum"])
        numeric = kind in ("number", "integer")
        minimum = rule.get("min", rule.get("xmin")) if numeric else None
        maximum = rule.get("max", rule.get("xmax")) if numeric else None
        step = None
        if kind == "integer":
            step = "1"
        elif kind == "number":
            step = "any"
        out.append(
            FormField(
                name=name,
                kind=kind,
                text="" if secret else value_text(current, rule),
                type=type_of(rule),
                constraints=constraints_of(rule),
                description=str(rule.get("description", "")),
                default=default,
                options=options,
                minimum=None
                if minimum is None or kind not in ("number", "integer")
                else str(minimum),
                maximum=None
                if maximum is None or kind not in ("number", "integer")
                else str(maximum),
                step=step,
                maxlength=int(rule["maxlen"]) if "maxlen" in rule and not secret else None,
                nullable="null" in types,
                secret=secret,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class FormResult:
    """A submitted form: the fields that change, their texts, and the
    problems found while parsing (the CLI's messages, per field)."""

    values: dict[str, Any]
    texts: dict[str, str]
    errors: dict[str, str]


def read_form(
    rules: Mapping[str, Any],
    values: Mapping[str, Any],
    form: Mapping[str, str],
    *,
    may_set_secrets: bool,
) -> FormResult:
    """What a submitted edit form changes.

    A field whose text is what the form showed is unchanged (and not
    re-parsed); an empty secret input leaves the secret as it is.  Unknown
    names in ``form`` are ignored (the CSRF token, the reason ...).
    """
    fields = field_rules(rules)
    changed: dict[str, Any] = {}
    texts: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, rule in fields.items():
        if name not in form:
            continue
        text = form[name]
        if rule.get("secret"):
            if text == "":
                continue
            if not may_set_secrets:
                errors[name] = "only an admin may change a secret field"
                continue
        else:
            text = text.replace("\r\n", "\n")
            if text == value_text(values.get(name), rule):
                continue
        texts[name] = text
        types = list(rule.get("types") or ["any"])
        if text == "" and "null" in types and _plain_null(types):
            text = "null"
        try:
            value = parse_value(text, rule)
        except ValueError as exc:
            errors[name] = str(exc)
            continue
        if not rule.get("secret") and name in values and values[name] == value:
            continue  # the same value, written another way (0.70 for 0.7)
        changed[name] = value
    return FormResult(changed, texts, errors)
