"""From a pydantic model to a parameter schema (I/O-free).

A :class:`ParamSchema` knows a model's fields, defaults and secret fields,
validates values with the full model (cross-field validators included) and
compiles the model's JSON schema into the compact rules the Lua library
enforces on every write, whoever the writer is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .checks import Check, checks_of
from .codec import MASK, TOKEN_PREFIX, dumps, encode_value, revealed, unopened
from .errors import CROSS_FIELD, InvalidParams, SchemaError
from .fastread import generic_reads
from .messages import field_reason
from .python_only import field_reasons, model_reason
from .redact import redact_text

__all__ = ["AnyParams", "ParamSchema", "compile_rules", "errors_of"]

M = TypeVar("M", bound=BaseModel)

#: the key of an error that belongs to no single field (a cross-field rule)
MODEL_ERROR_KEY = CROSS_FIELD

_NUMERIC = {
    "minimum": "min",
    "maximum": "max",
    "exclusiveMinimum": "xmin",
    "exclusiveMaximum": "xmax",
    "multipleOf": "multiple",
    "minLength": "minlen",
    "maxLength": "maxlen",
    "minItems": "minitems",
    "maxItems": "maxitems",
}
#: the most fields a schema may have (the Lua library's MAX_FIELDS, lifecycle.lua)
MAX_FIELDS = 1000
_JSON_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}


class AnyParams(BaseModel):
    """The params of a namespace read without its model: every field as stored."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _types_of(prop: Mapping[str, Any]) -> list[str]:
    if "enum" in prop and "type" not in prop:
        return sorted({_json_type(value) for value in prop["enum"]})
    if "const" in prop and "type" not in prop:
        return [_json_type(prop["const"])]
    kind = prop.get("type")
    if kind is None:
        return ["any"]
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return [k for k in kinds if k in _JSON_TYPES] or ["any"]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


#: JSON schema keywords the Lua rules enforce exactly, or that do not
#: constrain a value; any other keyword makes the field Python-only
_KNOWN_KEYWORDS = {
    *_NUMERIC,
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "uniqueItems",  # a set: duplicates are accepted and dropped
    "discriminator",  # the anyOf alternatives decide alone
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "secret",
    "format",  # "password" only, see _Compiler.rule
}


class _Compiler:
    """A property of the model's JSON schema, at any depth, as a Lua rule;
    what the rule cannot express is collected in ``python_only``."""

    def __init__(self, defs: Mapping[str, Any]) -> None:
        self.defs = defs
        self.python_only: set[str] = set()

    def _resolved(
        self, prop: Mapping[str, Any], refs: tuple[str, ...]
    ) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
        """``prop`` with its ``$ref`` and single ``allOf`` inlined (None: not
        expressible, already recorded as Python-only)."""
        out = dict(prop)
        while True:
            if "$ref" in out:
                name = str(out.pop("$ref")).rsplit("/", 1)[-1]
                if name in refs:
                    self.python_only.add(f"{name} is recursive")
                    return None, refs
                refs = (*refs, name)
                out = {**self.defs.get(name, {}), **out}
            elif "allOf" in out:
                every = out.pop("allOf")
                if len(every) != 1:
                    self.python_only.add("allOf")
                    return None, refs
                out = {**dict(every[0]), **out}
            else:
                return out, refs

    def rule(self, given: Mapping[str, Any], refs: tuple[str, ...] = ()) -> dict[str, Any]:
        prop, refs = self._resolved(given, refs)
        if prop is None:
            return {"types": ["any"]}
        for key in prop:
            if key not in _KNOWN_KEYWORDS:
                self.python_only.add(f"JSON schema {key!r}")
        if "format" in prop and prop["format"] != "password":
            self.python_only.add(f"format {prop['format']!r}")
        options = prop.get("anyOf") or prop.get("oneOf")
        if options:
            return {**self._union(options, refs), **_common(prop)}
        rule: dict[str, Any] = {"types": _types_of(prop)}
        choices = prop["enum"] if "enum" in prop else [prop["const"]] if "const" in prop else None
        if choices is not None:
            if any(isinstance(c, (list, dict)) for c in choices):
                self.python_only.add("a choice of arrays or objects")
            else:
                rule["enum"] = list(choices)
        for key, short in _NUMERIC.items():
            if key in prop and isinstance(prop[key], (int, float)):
                rule[short] = prop[key]
        self._array(prop, rule, refs)
        self._object(prop, rule, refs)
        rule.update(_common(prop))
        return rule

    def _union(self, options: list[Any], refs: tuple[str, ...]) -> dict[str, Any]:
        subs = [self.rule(o, refs) for o in options]
        non_null = [s for s in subs if s.get("types") != ["null"]]
        nullable = len(non_null) < len(subs)
        if len(non_null) == 1 and "anyof" not in non_null[0]:
            rule = dict(non_null[0])
            if nullable and not {"null", "any"} & set(rule["types"]):
                rule["types"] = [*rule["types"], "null"]
            return rule
        if any(s.get("types") == ["any"] and len(s) == 1 for s in subs):
            return {"types": ["any"]}
        return {"anyof": subs}

    def _array(self, prop: Mapping[str, Any], rule: dict[str, Any], refs: tuple[str, ...]) -> None:
        prefix = prop.get("prefixItems")
        if isinstance(prefix, list):
            rule["prefix"] = [self.rule(p, refs) for p in prefix]
        items = prop.get("items")
        if isinstance(items, Mapping):
            item = self.rule(items, refs)
            if item != {"types": ["any"]}:
                rule["item"] = item
        elif items is False and isinstance(prefix, list) and "maxitems" not in rule:
            rule["maxitems"] = len(prefix)

    def _object(self, prop: Mapping[str, Any], rule: dict[str, Any], refs: tuple[str, ...]) -> None:
        props = prop.get("properties")
        if isinstance(props, Mapping):
            rule["props"] = {str(k): self.rule(v, refs) for k, v in props.items()}
        required = prop.get("required")
        if isinstance(required, list) and required:
            rule["req"] = [str(r) for r in required]
        extra = prop.get("additionalProperties")
        if extra is False:
            rule["extra"] = False
        elif isinstance(extra, Mapping):
            sub = self.rule(extra, refs)
            if sub != {"types": ["any"]}:
                rule["extra"] = sub
        names = prop.get("propertyNames")
        if isinstance(names, Mapping):
            rule["keys"] = {**self.rule({"type": "string", **names}, refs)}
        for key, short in (("minProperties", "minprops"), ("maxProperties", "maxprops")):
            if isinstance(prop.get(key), int):
                rule[short] = prop[key]


def _common(prop: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if prop.get("format") == "password" or prop.get("writeOnly") or prop.get("secret") is True:
        out["secret"] = True
    if isinstance(prop.get("description"), str):
        out["description"] = prop["description"]
    return out


def compile_rules(model: type[BaseModel]) -> dict[str, Any]:
    """The Lua validation rules of ``model`` (a JSON-able dict).

    Parts Lua cannot check exactly are marked Python-only: a field rule's
    ``py`` (and the rules' ``py`` for model validators) says why; raw
    writers are refused on them (see "Raw
    writers" in hotparams/lua/hotparams.lua; the namespace's opt-in,
    ``allow_raw_writes``, is added by the register call).
    """
    try:
        schema = model.model_json_schema(mode="validation")
    except Exception as exc:  # pydantic raises several kinds here
        raise SchemaError(f"{model.__name__} has no JSON schema: {exc}") from None
    defs = schema.get("$defs", {})
    props = schema.get("properties", {})
    typed = field_reasons(model)
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key != name:
            raise SchemaError(f"{model.__name__}.{name}: aliases are not supported")
        if not name.isidentifier() or name.startswith("_"):
            raise SchemaError(f"{model.__name__}.{name}: not a usable field name")
        compiler = _Compiler(defs)
        rule = compiler.rule(props.get(name, {}))
        reasons = sorted({*compiler.python_only, *([typed[name]] if name in typed else [])})
        if reasons:
            rule["py"] = "; ".join(reasons)
        if not info.is_required():
            try:
                default = info.get_default(call_default_factory=True)
                rule["default"] = encode_value(default)
            except (TypeError, ValueError) as exc:
                raise SchemaError(
                    f"{model.__name__}.{name}: the default is not JSON-serialisable ({exc})"
                ) from None
        fields[name] = rule
    if not fields:
        raise SchemaError(f"{model.__name__} has no fields")
    if len(fields) > MAX_FIELDS:
        raise SchemaError(
            f"{model.__name__} has {len(fields)} fields; a schema has at most {MAX_FIELDS} fields"
        )
    rules: dict[str, Any] = {
        "fields": fields,
        "model": f"{model.__module__}:{model.__qualname__}",
    }
    whole = model_reason(model)
    if whole:
        rules["py"] = whole
    checks = _compiled_checks(model, fields)
    if checks:
        rules["checks"] = checks
    return rules


def _compiled_checks(model: type[BaseModel], fields: dict[str, Any]) -> list[list[str]]:
    try:
        checks = checks_of(model)
    except TypeError as exc:
        raise SchemaError(str(exc)) from None
    out: list[list[str]] = []
    for check in checks:
        for name in (check.left, check.right):
            if name not in fields:
                raise SchemaError(f"{model.__name__}: check {check.message!r}: no field {name!r}")
        kinds = [set(fields[n].get("types", ["any"])) - {"null"} for n in (check.left, check.right)]
        if not all(k <= {"number", "integer"} for k in kinds) and not all(
            k == {"string"} for k in kinds
        ):
            raise SchemaError(
                f"{model.__name__}: check {check.message!r} compares two numbers or two strings"
            )
        out.append(check.as_rule())
    return out


#: pydantic's error types of the model's own validators, whose message is
#: the model author's text and may quote the value
_CUSTOM_ERRORS = frozenset({"value_error", "assertion_error"})
#: a secret shorter than this is not searched for in messages (it would
#: mask ordinary words); a validator of a secret field is masked whole anyway
MIN_SCRUBBED = 4
SECRET_VALIDATOR_MESSAGE = "rejected by a validator of the model (its message is hidden: secret)"


def secret_texts(values: Mapping[str, Any], secrets: frozenset[str]) -> list[str]:
    """The secret values among ``values`` as the texts a message could quote."""
    out: list[str] = []
    for name in secrets:
        if name not in values:
            continue
        plain = revealed(values[name])
        for text in (plain if isinstance(plain, str) else dumps(plain), str(plain)):
            if len(text) >= MIN_SCRUBBED and text not in out:
                out.append(text)
    return out


def errors_of(
    exc: ValidationError,
    secrets: frozenset[str] = frozenset(),
    quoted: list[str] | None = None,
    rules: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, str]:
    """One message per field, never the offending input (it may be a secret).

    A rule the Lua functions check too (bounds, lengths, item counts, an
    enum, a type) is said in their words (:mod:`hotparams.messages`), so a
    bound model and Redis give one message for one mistake (``rules``: the
    stored rules of the fields, for the enum and type names).

    The message of a model validator on a ``secrets`` field is replaced (it
    is the model author's text and may quote the value, however
    transformed), and every text of ``quoted`` (the secret values) is
    masked in every other message.
    """
    out: dict[str, str] = {}
    for err in exc.errors(include_url=False, include_input=True):
        loc = err.get("loc") or ()
        field = str(loc[0]) if loc else MODEL_ERROR_KEY
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        # the Lua functions' words for a rule they check too (the input is
        # only used, as a number or a length, when the field is not secret)
        rule = (rules or {}).get(field)
        lua = field_reason(err, secret=field in secrets, rule=rule) if len(loc) == 1 else None
        if lua is not None:
            msg = lua
        elif field in secrets and err.get("type") in _CUSTOM_ERRORS:
            msg = SECRET_VALIDATOR_MESSAGE
        elif quoted:
            msg = redact_text(msg, quoted, MASK)
        if len(loc) > 1:
            msg = f"{'.'.join(str(p) for p in loc[1:])}: {msg}"
        out[field] = f"{out[field]}; {msg}" if field in out else msg
    return out


def _frozen(model: type[M], secrets: frozenset[str]) -> type[M]:
    """A frozen subclass of ``model`` that compares equal to plain instances,
    masks every secret field (not only SecretStr ones) in its repr, and whose
    field reads CPython specialises (:mod:`hotparams.fastread`)."""

    def __eq__(self: BaseModel, other: object) -> bool:
        if not isinstance(other, model):
            return NotImplemented
        return self.__dict__ == other.__dict__ and self.__pydantic_extra__ == (
            other.__pydantic_extra__
        )

    def __hash__(self: BaseModel) -> int:
        return hash(dumps(revealed(self)))

    def __repr_args__(self: BaseModel) -> Any:
        for name, value in model.__repr_args__(self):
            yield name, (MASK if name in secrets else value)

    def __reduce__(self: BaseModel) -> Any:  # pickled as an instance of ``model``
        return model.model_validate, (dict(self.__dict__),)

    namespace = {
        "model_config": ConfigDict(frozen=True),
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
        "__doc__": model.__doc__,
        "__eq__": __eq__,
        # a frozen model keeps pydantic's hash: equal to its own instances' hash
        "__hash__": model.__hash__
        if model.model_config.get("frozen") and not secrets
        else __hash__,
        "__repr_args__": __repr_args__,
        "__reduce__": __reduce__,
    }
    frozen = type(model.__name__, (model,), namespace)
    generic_reads(frozen)
    return frozen


@dataclass(frozen=True, eq=False)
class ParamSchema(Generic[M]):
    """A model seen as a parameter schema."""

    model: type[M]
    frozen_model: type[M]
    rules: Mapping[str, Any]
    rules_json: str
    secrets: frozenset[str]
    defaults_json: Mapping[str, str]
    checks: tuple[Check, ...] = ()

    @classmethod
    def of(cls, model: type[M]) -> ParamSchema[M]:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise SchemaError(f"{model!r} is not a pydantic model class")
        rules = compile_rules(model)
        fields = rules["fields"]
        secrets = frozenset(n for n, r in fields.items() if r.get("secret"))
        return cls(
            model=model,
            frozen_model=_frozen(model, secrets),
            rules=rules,
            rules_json=dumps(rules),
            secrets=secrets,
            checks=checks_of(model),
            defaults_json={n: r["default"] for n, r in fields.items() if "default" in r},
        )

    @cached_property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.rules["fields"])

    @cached_property
    def _known(self) -> frozenset[str]:
        return frozenset(self.rules["fields"])

    @cached_property
    def plain_names(self) -> frozenset[str]:
        """The fields whose names every writer accepts as they are (ASCII
        identifiers, see :func:`hotparams.writes.check_field_names`): a
        change naming only these needs no per-name check."""
        return frozenset(n for n in self.rules["fields"] if n.isidentifier() and n.isascii())

    @cached_property
    def _checked_fields(self) -> tuple[str, ...]:
        """The fields the checks compare (the JSON form they read)."""
        return tuple(dict.fromkeys(n for c in self.checks for n in (c.left, c.right)))

    def check_names(self, namespace: str, names: Iterable[str]) -> None:
        unknown = {n: "unknown field" for n in names if n not in self.rules["fields"]}
        if unknown:
            raise InvalidParams(namespace, unknown)

    def check_unset(self, namespace: str, names: Iterable[str]) -> None:
        self.check_names(namespace, names)
        bad = {
            n: "cannot be unset (the field has no default)"
            for n in names
            if n not in self.defaults_json
        }
        if bad:
            raise InvalidParams(namespace, bad)

    def validate(self, namespace: str, values: Mapping[str, Any]) -> M:
        """The frozen model built from ``values``, or InvalidParams.

        Stored fields this model does not know (a newer schema) are ignored.
        """
        if self._known.issuperset(values):  # every field known: the filter copies it whole
            known = dict(values)
        else:
            known = {k: v for k, v in values.items() if k in self.rules["fields"]}
        for value in known.values():
            if isinstance(value, str) and value.startswith(TOKEN_PREFIX):
                # a secret encrypted at rest that no key of this client opens
                raise InvalidParams(namespace, unopened(known))
        try:
            # model_validate's own call, without its Python frame
            params: M = self.frozen_model.__pydantic_validator__.validate_python(known)
        except ValidationError as exc:
            errors = errors_of(
                exc, self.secrets, secret_texts(known, self.secrets), self.rules["fields"]
            )
        else:
            if not self.checks:
                return params
            # once, whatever the number of checks; only the fields they compare
            doc = {name: revealed(getattr(params, name)) for name in self._checked_fields}
            failed = [c.message for c in self.checks if not c.holds(doc)]
            if not failed:
                return params
            errors = {MODEL_ERROR_KEY: "; ".join(failed)}
        # raised outside the except block: the ValidationError (which holds
        # the input, perhaps a secret) must not ride along as __context__
        raise InvalidParams(namespace, errors)

    def encode(self, namespace: str, params: BaseModel, names: Iterable[str]) -> dict[str, str]:
        """Stored JSON text of the named fields of a validated instance."""
        out: dict[str, str] = {}
        problems: dict[str, str] = {}
        for name in names:
            value = getattr(params, name)
            kind = type(value)
            try:
                if kind in _SCALARS:  # encode_value's own result, without its walk
                    if kind is float and not math.isfinite(value):
                        raise ValueError("numbers must be finite")
                    out[name] = dumps(value)
                else:
                    out[name] = encode_value(value)
            except (TypeError, ValueError) as exc:
                problems[name] = f"cannot be stored as JSON ({exc})"
        if problems:
            raise InvalidParams(namespace, problems)
        return out

    def jsonable(self, params: BaseModel) -> dict[str, Any]:
        return {name: revealed(getattr(params, name)) for name in self.rules["fields"]}


#: the exact types :func:`~hotparams.codec.encode_value` stores as they are
#: (``revealed`` and pydantic's ``to_jsonable_python`` return them unchanged)
_SCALARS = frozenset({str, int, float, bool, type(None)})
