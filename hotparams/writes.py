"""The write operations, free of I/O: commit, batch, variant, rollback, restore.

Like every operation of :mod:`hotparams.protocol`, each is a generator that
yields its calls and receives their replies; a Python writer validates a
change with the full model against the version it applies to, and commits
it only if that version is still current (``@base``), re-reading and
re-validating after a concurrent change.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from .codec import encode_value, loads
from .errors import HotParamsError, InvalidParams, NamespaceNotFound, VersionConflict
from .keys import Keys
from .protocol import (
    Batch,
    FCall,
    LibraryMissing,
    Op,
    Stale,
    Stored,
    Who,
    head_op,
    new_request_id,
    parse_stored,
    register_op,
)
from .schema import ParamSchema
from .variants import VariantSet, validate_merged, validate_variants

__all__ = [
    "BatchError",
    "Committed",
    "check_op",
    "commit_op",
    "restore_op",
    "rollback_op",
    "set_many_op",
    "variant_op",
]

#: how often a Python writer re-validates after a concurrent change
MAX_STALE_RETRIES = 64

#: the marker of a writer that validated the whole new state with the
#: model: Redis then accepts fields only Python can check (see "Raw
#: writers" in hotparams/lua/hotparams.lua); sent only when a model is held
VALIDATED = ("@validated", "1")


def check_field_names(ns: str, names: Sequence[Any]) -> None:
    """Field names are identifiers; anything else (an "@option" above all)
    is refused before it reaches Redis, whoever the writer is."""
    bad = {
        str(n): 'not a field name (field names are identifiers; "@..." are options)'
        for n in names
        if not (isinstance(n, str) and n.isidentifier() and n.isascii())
    }
    if bad:
        raise InvalidParams(ns, bad)


@dataclass(frozen=True, slots=True)
class Committed:
    """One committed write of a batch (:attr:`BatchError.results`): its
    version and, when the writer knows it whole, the new state, whose repr
    shows no value (:class:`~hotparams.protocol.Stored` leaves them out)."""

    version: int
    state: Stored | None


def commit_op(
    keys: Keys,
    schema: ParamSchema[Any] | None,
    changes: Mapping[str, Any],
    *,
    unset: Sequence[str] = (),
    expect: int | None,
    who: Who,
    known: Stored | None = None,
    replace: bool = False,
    op: str | None = None,
    variants: str | None = None,
    set_variants: bool = False,
) -> Op[Committed]:
    """Validate and commit a change.

    ``set_variants`` also replaces the A/B variants document with
    ``variants`` (None: no variants), as a restore does.

    With a model, the change is validated by the full model merged with the
    version it applies to, and committed only if that version is still the
    current one (``@base``); a concurrent change makes it re-read and
    re-validate.  Without a model, the Lua rules alone apply.
    """
    ns = keys.namespace
    unset = _check_change(ns, schema, changes, unset, expect, allow_empty=set_variants)
    # one id for every attempt: a retry after a lost reply (or after a
    # concurrent change, which committed nothing) is the same request
    options = _options(unset, expect, replace, op, who, new_request_id())
    if set_variants:
        options = ("@variants", variants or "", *options)
    if schema is None:
        encoded = _encode_plain(ns, changes)
        version = int((yield FCall("hp_commit", ns, (*_pairs(encoded), *options))))
        return Committed(version, None)
    state = known
    for _ in range(MAX_STALE_RETRIES):
        if state is None or (expect is not None and state.version != expect):
            state = parse_stored(ns, (yield FCall("hp_get", ns, (), readonly=True)))
        if expect is not None and state.version != expect:
            raise VersionConflict(ns, expect, state.version)
        doc = variants if set_variants else state.variants
        encoded, new_raw = _validated(ns, schema, state, changes, unset, replace, doc)
        args = (*_pairs(encoded), *options, "@base", str(state.version), *VALIDATED)
        try:
            version = int((yield FCall("hp_commit", ns, args)))
        except Stale:
            state = None
            continue
        if version == state.version:  # nothing changed
            return Committed(version, state)
        if version != state.version + 1:
            return Committed(version, None)
        new_state = Stored(ns, version, state.epoch, 0, state.schema_rev, new_raw, doc)
        return Committed(version, new_state)
    raise HotParamsError(
        f"{ns!r} changed {MAX_STALE_RETRIES} times while this change was being validated; giving up"
    )


def check_op(
    keys: Keys,
    schema: ParamSchema[Any] | None,
    changes: Mapping[str, Any],
    *,
    unset: Sequence[str] = (),
    expect: int | None,
) -> Op[int]:
    """A dry run of a change: every check a write makes, nothing written.

    Redis checks the change by its stored rules first (``@check 1``: the
    rules and messages every writer meets, the CLI's among them); then, with
    a model, the full model checks the merged values.  Returns the version
    the change was checked against; raises what the write would raise.
    """
    ns = keys.namespace
    names = _check_change(ns, None, changes, unset, expect)
    args: list[str] = [*_pairs(_encode_plain(ns, changes))]
    for name in names:
        args += ["@unset", name]
    if expect is not None:
        args += ["@expect", str(expect)]
    if schema is not None:  # the model first: then Redis may trust it (@validated)
        _check_change(ns, schema, changes, names, expect)
        state = parse_stored(ns, (yield FCall("hp_get", ns, (), readonly=True)))
        _validated(ns, schema, state, changes, names, False, state.variants)
        args += VALIDATED
    return int((yield FCall("hp_commit", ns, (*args, "@check", "1"))))


def set_many_op(
    items: Sequence[tuple[Keys, ParamSchema[Any] | None, Mapping[str, Any]]],
    *,
    who: Who,
    known: Mapping[str, Stored],
    _depth: int = 0,
) -> Op[list[Committed]]:
    """Validate every change first, then send them all in one pipeline.

    Each change is atomic on its own; changes of one namespace chain their
    ``@base`` versions.  A change that meets a concurrent write is redone
    alone.  Errors Redis still finds raise :class:`BatchError` with the
    outcome of every item, so a caller knows exactly what was committed.
    """
    states = dict(known)
    calls: list[FCall] = []
    planned: list[Stored | None] = []
    audit = who.args()
    for keys, schema, changes in items:
        ns = keys.namespace
        _check_change(ns, schema, changes, (), None)
        rid = ("@rid", new_request_id())
        if schema is None:
            encoded = _encode_plain(ns, changes)
            calls.append(FCall("hp_commit", ns, (*_pairs(encoded), *audit, *rid)))
            planned.append(None)
            continue
        state = states.get(ns)
        if state is None:
            state = parse_stored(ns, (yield FCall("hp_get", ns, (), readonly=True)))
        encoded, new_raw = _validated(ns, schema, state, changes, (), False, state.variants)
        args = (*_pairs(encoded), *audit, *rid, "@base", str(state.version), *VALIDATED)
        calls.append(FCall("hp_commit", ns, args))
        if new_raw != dict(state.raw):
            state = Stored(
                ns, state.version + 1, state.epoch, 0, state.schema_rev, new_raw, state.variants
            )
        states[ns] = state
        planned.append(state)
    if not calls:
        return []
    replies = yield Batch(tuple(calls))
    results: list[Committed | Exception] = []
    redo: list[int] = []
    for index, (planned_state, reply) in enumerate(zip(planned, replies, strict=True)):
        if isinstance(reply, (Stale, LibraryMissing)):
            redo.append(index)  # a concurrent write (or lost functions): redo below
            results.append(reply)
        elif isinstance(reply, Exception):
            results.append(reply)
        else:
            version = int(reply)
            ok = planned_state is not None and planned_state.version == version
            results.append(Committed(version, planned_state if ok else None))
    if redo:
        redone = yield from _redo_op([items[i] for i in redo], who, _depth)
        for index, outcome in zip(redo, redone, strict=True):
            results[index] = outcome
    if any(isinstance(r, Exception) for r in results):
        raise BatchError(results)
    return [r for r in results if isinstance(r, Committed)]


def _redo_op(
    items: Sequence[tuple[Keys, ParamSchema[Any] | None, Mapping[str, Any]]],
    who: Who,
    depth: int,
) -> Op[list[Committed | Exception]]:
    """Items of a batch that met a concurrent write: re-read and pipeline
    them again, and past two attempts commit them one by one."""
    if depth < 2:
        try:
            return list((yield from set_many_op(items, who=who, known={}, _depth=depth + 1)))
        except BatchError as exc:
            return exc.results
    out: list[Committed | Exception] = []
    for keys, schema, changes in items:
        try:
            out.append((yield from commit_op(keys, schema, changes, expect=None, who=who)))
        except HotParamsError as exc:
            out.append(exc)
    return out


class BatchError(HotParamsError):
    """Some changes of a batch failed; ``results`` holds each item's outcome
    (a :class:`Committed` or the exception) in the order given."""

    def __init__(self, results: Sequence[Committed | Exception]) -> None:
        self.results = list(results)
        failed = [(i, r) for i, r in enumerate(self.results) if isinstance(r, Exception)]
        first = failed[0]
        super().__init__(
            f"{len(failed)} of {len(self.results)} changes failed; the others were committed; "
            f"first failure (item {first[0]}): {first[1]}"
        )


def _check_change(
    ns: str,
    schema: ParamSchema[Any] | None,
    changes: Mapping[str, Any],
    unset: Sequence[str],
    expect: int | None,
    *,
    allow_empty: bool = False,
) -> list[str]:
    if expect is not None and (
        isinstance(expect, bool) or not isinstance(expect, int) or expect < 0
    ):
        raise InvalidParams(ns, {"expect_version": "must be a version number"})
    names = list(dict.fromkeys(unset))
    if not names and changes and schema is not None and schema.plain_names.issuperset(changes):
        return names  # only fields of the model, each a plain name: every check below passes
    check_field_names(ns, [*changes, *names])
    overlap = set(names) & set(changes)
    if overlap:
        raise InvalidParams(ns, {n: "both set and unset" for n in sorted(overlap)})
    if not changes and not names and not allow_empty:
        raise InvalidParams(ns, {"*": "nothing to change"})
    if schema is not None:
        schema.check_names(ns, changes)
        schema.check_unset(ns, names)
    return names


def _options(
    unset: Sequence[str],
    expect: int | None,
    replace: bool,
    op: str | None,
    who: Who,
    rid: str,
) -> tuple[str, ...]:
    args: list[str] = ["@rid", rid]
    for name in unset:
        args += ["@unset", name]
    if expect is not None:
        args += ["@expect", str(expect)]
    if replace:
        args += ["@replace", "1"]
    if op is not None:
        args += ["@op", op]
    return (*args, *who.args())


def _pairs(encoded: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(chain.from_iterable(encoded.items()))


def _validated(
    ns: str,
    schema: ParamSchema[Any],
    state: Stored,
    changes: Mapping[str, Any],
    unset: Sequence[str],
    replace: bool,
    variants: str | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """The stored text of the changed fields, and the whole new state
    (validated with each of the ``variants`` merged in)."""
    merged = {} if replace else state.values(replacing={*changes, *unset} if unset else changes)
    merged.update(changes)
    for name in unset:
        merged.pop(name, None)
    params = schema.validate(ns, merged)
    if variants:  # no document: no variant to validate
        validate_variants(ns, schema, merged, VariantSet.from_json(variants))
    touched: Iterable[str] = schema.fields if replace else changes
    if unset:
        touched = [n for n in touched if n not in unset]
    encoded = schema.encode(ns, params, touched)
    new_raw = {} if replace else dict(state.raw)
    new_raw.update(encoded)
    for name in unset:
        new_raw[name] = schema.defaults_json[name]
    return encoded, new_raw


def variant_op(
    keys: Keys,
    schema: ParamSchema[Any] | None,
    name: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    percent: float | None = None,
    users: Sequence[str] | None = None,
    remove: bool = False,
    expect: int | None,
    who: Who,
    known: Stored | None = None,
) -> Op[Committed]:
    """Create, change or remove one A/B variant: a new version (op "variant")."""
    ns = keys.namespace
    if overrides is not None:
        check_field_names(ns, list(overrides))
        if schema is not None:
            schema.check_names(ns, overrides)
    rid = new_request_id()
    state = known
    for _ in range(MAX_STALE_RETRIES):
        if state is None or (expect is not None and state.version != expect):
            state = parse_stored(ns, (yield FCall("hp_get", ns, (), readonly=True)))
        if expect is not None and state.version != expect:
            raise VersionConflict(ns, expect, state.version)
        updated = _updated_variants(ns, schema, state, name, overrides, percent, users, remove)
        if schema is not None:
            validate_variants(ns, schema, state.values(), updated)
        document = updated.to_json()
        args: list[str] = [
            "@variants",
            document or "",
            "@op",
            "variant",
            "@base",
            str(state.version),
            "@rid",
            rid,
        ]
        if expect is not None:
            args += ["@expect", str(expect)]
        if schema is not None:
            args += VALIDATED
        try:
            version = int((yield FCall("hp_commit", ns, (*args, *who.args()))))
        except Stale:
            state = None
            continue
        if version == state.version + 1:
            new_state = Stored(ns, version, state.epoch, 0, state.schema_rev, state.raw, document)
            return Committed(version, new_state)
        return Committed(version, state if version == state.version else None)
    raise HotParamsError(f"{ns!r} changed {MAX_STALE_RETRIES} times during a variant change")


def _updated_variants(
    ns: str,
    schema: ParamSchema[Any] | None,
    state: Stored,
    name: str,
    overrides: Mapping[str, Any] | None,
    percent: float | None,
    users: Sequence[str] | None,
    remove: bool,
) -> VariantSet:
    current = VariantSet.from_json(state.variants)
    try:
        if remove:
            return current.without(name)
        encoded = None
        if overrides is not None:
            encoded = _override_values(ns, schema, state, name, overrides)
        return current.with_variant(name, encoded, percent, users)
    except InvalidParams:
        raise
    except KeyError:
        raise InvalidParams(ns, {"variant": f"no variant named {name!r}"}) from None
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        raise InvalidParams(ns, {field or "variant": reason or str(exc)}) from None


def _override_values(
    ns: str,
    schema: ParamSchema[Any] | None,
    state: Stored,
    name: str,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """Overrides as stored JSON values: through the model when it is known."""
    if schema is None:
        return {k: loads(v) for k, v in _encode_plain(ns, overrides).items()}
    params, _ = validate_merged(ns, schema, state.values(), name, overrides)
    return {k: loads(v) for k, v in schema.encode(ns, params, overrides).items()}


def _encode_plain(namespace: str, changes: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    problems: dict[str, str] = {}
    for name, value in changes.items():
        try:
            out[name] = encode_value(value)
        except (TypeError, ValueError) as exc:
            problems[name] = f"cannot be stored as JSON ({exc})"
    if problems:
        raise InvalidParams(namespace, problems)
    return out


def rollback_op(
    keys: Keys,
    schema: ParamSchema[Any] | None,
    target: int,
    *,
    expect: int | None,
    who: Who,
) -> Op[int]:
    ns = keys.namespace
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise InvalidParams(ns, {"version": "must be a positive version number"})
    if schema is not None:
        # the full model (cross-field rules) must accept the old values too
        old = parse_stored(ns, (yield FCall("hp_get", ns, (str(target),), readonly=True)))
        schema.validate(ns, old.values())
    args = [str(target), "@rid", new_request_id()]
    if expect is not None:
        args += ["@expect", str(expect)]
    if schema is not None:
        args += VALIDATED
    args += who.args()
    return int((yield FCall("hp_rollback", ns, tuple(args))))


def restore_op(
    keys: Keys,
    schema: ParamSchema[Any],
    values: Mapping[str, Any],
    *,
    who: Who,
    settings: Mapping[str, int],
    variants: str | None = None,
) -> Op[int]:
    """Make ``values`` (and ``variants``, an A/B variants document) the
    current state of the namespace; returns its version.

    An existing namespace gets them as a new version (audited as
    ``restore``), also when its current version hash is damaged (lost or
    incomplete); a missing one, or one whose meta was lost, is registered
    with them as version 1 of a new history (epoch), whose version hashes
    are written whole into fresh keys.  Fields the model does not know are
    dropped.
    """
    known = {k: v for k, v in values.items() if k in schema.fields}
    for _ in range(3):
        try:
            head = yield from head_op(keys, digest=False)
            # the current version is replaced whole: restore does not read it
            # (it may be damaged: a lost or incomplete hash is what it repairs)
            base = Stored(keys.namespace, head.version, head.epoch, 0, head.schema_rev, {})
            committed = yield from commit_op(
                keys,
                schema,
                known,
                expect=None,
                who=who,
                known=base,
                replace=True,
                op="restore",
                variants=variants,
                set_variants=True,
            )
            return committed.version
        except NamespaceNotFound:
            pass  # never registered, flushed, or its meta lost: a new history (epoch)
        registered = yield from register_op(
            keys,
            schema,
            epoch=secrets.token_hex(8),
            who=who,
            initial=known,
            settings=settings,
        )
        if registered.created:
            if not variants:
                return registered.version
            # version 1 holds the values; the variants come back as version 2
            committed = yield from commit_op(
                keys,
                schema,
                {},
                expect=registered.version,
                who=who,
                op="restore",
                variants=variants,
                set_variants=True,
            )
            return committed.version
        # someone registered it meanwhile: write the values over theirs
    raise HotParamsError(f"{keys.namespace!r} kept changing while being restored; giving up")
