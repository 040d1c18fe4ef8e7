"""A namespace's life, free of I/O: its settings (configure), its schema's
migrations, the list of namespaces, and deletion.

Like every operation of :mod:`hotparams.protocol`, each is a generator of
calls that both buses drive.  The Lua side is ``hotparams/lua/lifecycle.lua``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .codec import dumps, loads
from .config import SETTING_CAPS, ConfigError
from .errors import HotParamsError
from .evolution import migration_rules
from .keys import PREFIX, Keys, check_namespace
from .protocol import (
    Batch,
    Command,
    FCall,
    Op,
    Scan,
    Stale,
    Who,
    head_op,
    new_request_id,
    text,
)
from .schema import ParamSchema

__all__ = [
    "SETTING_CAPS",
    "FieldPlan",
    "Migration",
    "NamespaceInfo",
    "NamespaceSettings",
    "configure_op",
    "delete_op",
    "migrate_op",
    "namespaces_op",
]


@dataclass(frozen=True, slots=True)
class NamespaceSettings:
    """A namespace's settings: versions kept, audit entries kept, value size limit."""

    retention: int
    audit_maxlen: int
    max_value_bytes: int


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """One namespace, as :meth:`hotparams.Bus.namespaces` lists it."""

    namespace: str
    version: int
    epoch: str
    committed_ms: int
    schema_rev: int
    settings: NamespaceSettings
    #: author and op of the last audit entry ("" if the audit is empty)
    last_author: str
    last_op: str
    #: live workers reporting on the namespace
    workers: int


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """What a migration does to one stored value: ``kept``, ``dropped``,
    ``renamed`` (to ``to``), ``replaced`` (a stored field a rename onto it
    replaces, e.g. one a new release registered with its default),
    ``added`` (the default) or ``invalid`` (``reason``: it would not fit)."""

    field: str
    action: str
    to: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Migration:
    """A migration's plan and outcome: ``applied`` is False for a dry run,
    for a plan with an invalid field (nothing written) and when there was
    nothing to migrate."""

    namespace: str
    version: int
    schema_rev: int
    applied: bool
    fields: tuple[FieldPlan, ...]

    @property
    def ok(self) -> bool:
        return all(f.action != "invalid" for f in self.fields)

    @property
    def problems(self) -> dict[str, str]:
        return {(f.to or f.field): f.reason or "" for f in self.fields if f.action == "invalid"}


# ---------------------------------------------------------------- settings


def check_settings(namespace: str, values: Mapping[str, int | None]) -> dict[str, int]:
    """The given settings, within their caps (else ConfigError, before any I/O)."""
    out: dict[str, int] = {}
    for name, value in values.items():
        if value is None:
            continue
        low, high = SETTING_CAPS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{namespace}: {name} must be an integer from {low:,} to {high:,}")
        out[name] = value
    return out


def configure_op(
    keys: Keys, settings: Mapping[str, int | None], *, who: Who, expect: int | None = None
) -> Op[NamespaceSettings]:
    ns = keys.namespace
    wanted = check_settings(ns, settings)
    if not wanted:
        raise ConfigError(f"{ns}: configure needs a setting (retention, audit_maxlen, ...)")
    args: list[str] = []
    for name, value in wanted.items():
        args += [name, str(value)]
    if expect is not None:
        args += ["@expect", str(expect)]
    reply = yield FCall("hp_configure", ns, (*args, *who.args()))
    _, retention, audit_maxlen, max_value_bytes = (int(x) for x in reply)
    return NamespaceSettings(retention, audit_maxlen, max_value_bytes)


# ---------------------------------------------------------------- list, delete


def _namespace_of(key: str) -> str | None:
    head, tail = f"{PREFIX}:{{", "}:meta"
    if not (key.startswith(head) and key.endswith(tail)):
        return None
    name = key[len(head) : -len(tail)]
    try:
        return check_namespace(name)
    except HotParamsError:
        return None


def namespaces_op() -> Op[list[NamespaceInfo]]:
    """Every namespace, sorted by name: one SCAN of ``hp:{*}:meta`` (on each
    primary of a cluster), then one pipelined ``hp_info`` per namespace."""
    found = yield Scan(f"{PREFIX}:{{*}}:meta")
    names = sorted({n for n in (_namespace_of(text(k)) for k in found) if n})
    if not names:
        return []
    replies = yield Batch(tuple(FCall("hp_info", n, (), readonly=True) for n in names))
    out: list[NamespaceInfo] = []
    for name, reply in zip(names, replies, strict=True):
        if isinstance(reply, Exception):  # deleted between the scan and the read
            continue
        r = [text(x) for x in reply]
        out.append(
            NamespaceInfo(
                namespace=name,
                version=int(r[0]),
                epoch=r[1],
                committed_ms=int(r[2]),
                schema_rev=int(r[3]),
                settings=NamespaceSettings(int(r[4]), int(r[5]), int(r[6])),
                last_author=r[7],
                last_op=r[8],
                workers=int(r[9]),
            )
        )
    return out


def delete_op(keys: Keys, *, who: Who, expect: int | None = None) -> Op[int]:
    args: tuple[str, ...] = ("@rid", new_request_id())
    if expect is not None:
        args += ("@expect", str(expect))
    return int((yield FCall("hp_delete", keys.namespace, (*args, *who.args()))))


# ---------------------------------------------------------------- migrate

#: how often a migration re-reads the stored schema after a concurrent change
MAX_MIGRATE_RETRIES = 16


def migrate_op(
    keys: Keys,
    schema: ParamSchema[Any],
    *,
    drop: Sequence[str],
    rename: Mapping[str, str],
    who: Who,
    dry_run: bool,
    expect: int | None = None,
) -> Op[Migration]:
    """Migrate to ``schema`` in one atomic ``hp_migrate``: every check
    first (InvalidParams naming each value that would not fit, nothing
    written), then a new schema revision and version (op "migrate").  A dry
    run returns the plan, invalid values included, and writes nothing."""
    ns = keys.namespace
    drop = [drop] if isinstance(drop, str) else list(drop)
    rename = dict(rename)
    rid = new_request_id()  # the same for the Bus's retries of one attempt
    for _ in range(MAX_MIGRATE_RETRIES):
        head = yield from head_op(keys)
        raw = yield Command(ns, ("HGET", keys.schema, str(head.schema_rev)))
        stored = loads(raw) if raw else {"fields": {}}
        rules = migration_rules(stored, schema.rules, drop, rename)
        options: dict[str, Any] = {
            "drop": drop,
            "rename": rename,
            "base_rev": head.schema_rev,
            "dry_run": dry_run,
            "rid": rid,
            "author": who.author,
            "reason": who.reason,
            "source": who.source or _source(),
        }
        if expect is not None:
            options["expect"] = expect
        try:
            reply = yield FCall("hp_migrate", ns, (dumps(rules), dumps(options)))
        except Stale:  # the schema changed since it was read: plan again
            continue
        return _migration(ns, reply)
    raise HotParamsError(f"the schema of {ns!r} kept changing during the migration; giving up")


def _source() -> str:
    from .protocol import default_source

    return default_source()


def _migration(ns: str, reply: Any) -> Migration:
    doc = loads(text(reply))
    return Migration(
        namespace=ns,
        version=int(doc["version"]),
        schema_rev=int(doc["schema_rev"]),
        applied=bool(doc["applied"]),
        fields=tuple(
            FieldPlan(str(f["field"]), str(f["action"]), f.get("to"), f.get("reason"))
            for f in doc["fields"]
        ),
    )


def rename_pairs(items: Iterable[str]) -> dict[str, str]:
    """``OLD=NEW`` items (the CLI's ``--rename``) as a mapping, or ConfigError."""
    out: dict[str, str] = {}
    for item in items:
        old, eq, new = item.partition("=")
        if not eq or not old or not new:
            raise ConfigError(f"--rename must be OLD=NEW, got {item!r}")
        out[old] = new
    return out
