"""The Redis conversation of every operation, free of I/O (the writes are in
:mod:`hotparams.writes`).

Each operation is a generator that yields the calls it needs
(:class:`FCall` or :class:`Command`) and receives their replies; the sync
and the asyncio buses drive these generators, adding only what I/O needs
(sending, retries, the library check).  Error replies of the Lua library
are decoded here (:func:`decode_error`) and thrown into the generator.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, SecretStr

from .codec import dumps, loads
from .config import ConfigError
from .errors import (
    InvalidParams,
    NamespaceDamaged,
    NamespaceNotFound,
    PermissionDenied,
    ProtocolError,
    SchemaError,
    Tombstone,
    VersionConflict,
    VersionNotFound,
)
from .keys import Keys
from .schema import AnyParams, ParamSchema
from .snapshot import Change, FieldChange, Snapshot, frozen_mapping
from .variants import VariantSet

__all__ = [
    "Batch",
    "Broadcast",
    "Command",
    "FCall",
    "Head",
    "LibraryExists",
    "LibraryMissing",
    "Op",
    "Registered",
    "Scan",
    "Stale",
    "Stored",
    "Who",
    "decode_error",
    "get_op",
    "head_op",
    "history_op",
    "new_request_id",
    "parse_stored",
    "register_op",
    "rules_op",
]

T = TypeVar("T")

#: the field of a version hash holding its A/B variants
VARIANTS_FIELD = "@variants"
#: the field of a version hash holding its content digest
DIGEST_FIELD = "@digest"


@dataclass(frozen=True, slots=True)
class FCall:
    """``FCALL``/``FCALL_RO`` of one library function on one namespace."""

    function: str
    namespace: str
    args: tuple[str, ...] = ()
    readonly: bool = False

    def command(self) -> tuple[str, ...]:
        verb = "FCALL_RO" if self.readonly else "FCALL"
        return (verb, self.function, "1", self.namespace, *self.args)


@dataclass(frozen=True, slots=True)
class Command:
    """A plain read command (e.g. ``XREVRANGE``) on a namespace's keys."""

    namespace: str
    args: tuple[str, ...]

    def command(self) -> tuple[str, ...]:
        return self.args


@dataclass(frozen=True, slots=True)
class Scan:
    """Every key matching ``pattern`` (of Redis type ``kind``), on every
    primary: the driver runs redis-py's ``scan_iter``, which in a cluster
    scans each primary in turn.  The reply is the list of key names."""

    pattern: str
    kind: str = "hash"
    namespace: str = ""

    def command(self) -> tuple[str, ...]:  # pragma: no cover - drivers use scan_iter
        return ("SCAN", "0", "MATCH", self.pattern, "TYPE", self.kind)


@dataclass(frozen=True, slots=True)
class Batch:
    """Several calls sent in one pipeline (not a transaction), on one
    connection, in order.

    The reply is a list with, per call, its reply or its decoded exception.
    """

    calls: tuple[FCall | Command, ...]

    @property
    def namespace(self) -> str:
        return self.calls[0].namespace if self.calls else ""


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A command for every primary (the library's check and its load): in a
    cluster the driver sends it to each primary in turn, elsewhere to the
    one server.  The reply is a list with, per node, its reply or its
    decoded exception (one item outside a cluster)."""

    args: tuple[str, ...]
    namespace: str = ""

    def command(self) -> tuple[str, ...]:
        return self.args


Call = FCall | Command | Batch | Scan | Broadcast
Op = Generator[Call, Any, T]


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait before another try (only :meth:`BusCore.serve` yields it)."""

    seconds: float


#: what a driver performs: Redis calls, and the waits between tries
Wire = Call | Sleep


class ErrorReply(Exception):
    """An error reply of Redis, as a driver hands it over (thrown in, or in
    a Batch's replies): the message, and whether it was an ACL refusal."""

    def __init__(self, message: str, *, noperm: bool = False) -> None:
        super().__init__(message)
        self.noperm = noperm


class Transient(Exception):
    """The connection failed, not the request: another try may succeed."""


class Stale(Exception):
    """Internal: the version a writer validated against is no longer current."""

    def __init__(self, actual: int) -> None:
        self.actual = actual
        super().__init__(f"stale base; current is {actual}")


class LibraryMissing(Exception):
    """Internal: Redis has no hotparams functions (restarted, flushed, new)."""


class LibraryExists(Exception):
    """Internal: a ``FUNCTION LOAD`` without ``REPLACE`` found a library loaded."""


def text(value: Any) -> str:
    """A reply as text; ProtocolError (a HotParamsError) if it is not UTF-8."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ProtocolError(
                f"Redis answered bytes that are not UTF-8 ({_shown(value)})"
            ) from None
    return str(value)


def _shown(value: bytes, limit: int = 40) -> str:
    shown = value[:limit].decode(errors="backslashreplace")
    return shown + ("..." if len(value) > limit else "")


def lenient_text(value: Any) -> tuple[str, bool]:
    """A reply as text, bytes that are not UTF-8 shown escaped (``\\xed``);
    the flag tells whether any were."""
    if isinstance(value, bytes):
        try:
            return value.decode(), False
        except UnicodeDecodeError:
            return value.decode(errors="backslashreplace"), True
    return str(value), False


def is_function_missing(exc: Exception) -> bool:
    return "function not found" in str(exc).lower()


_INVALID_PART = re.compile(r"^([^:]+): (.*)$")
#: what Redis says when an ACL refuses a call, and what it names
_NOPERM_RUN = re.compile(r"no permissions to run the '([^']+)' command", re.IGNORECASE)
_NOPERM_ACCESS = re.compile(r"no permissions to access (?:one of )?the (\w+)", re.IGNORECASE)
_SCRIPT_REFUSED = (
    "user executing the script can't run this command",
    "user executing the script can't access",
    "no permissions to access a key",
)


def permission_denied(
    namespace: str, message: str, noperm: bool = False
) -> PermissionDenied | None:
    """The PermissionDenied for an ACL refusal of Redis (``noperm``: redis-py
    said so and dropped the NOPERM code), or of the library's own check
    (``HP_NOPERM <what>``), else None."""
    code, _, rest = message.partition(" ")
    if code == "HP_NOPERM":
        return PermissionDenied(namespace, rest)
    lowered = message.lower()
    if noperm or code == "NOPERM" or "noperm" in lowered[:40]:
        run = _NOPERM_RUN.search(message)
        if run:
            return PermissionDenied(namespace, f"run '{run.group(1)}'")
        access = _NOPERM_ACCESS.search(message)
        if access:
            what = access.group(1).lower()
            scope = f" of {namespace!r}" if namespace else ""
            return PermissionDenied(namespace, f"access the {what}{scope} it needs")
        return PermissionDenied(namespace, "do this", message)
    if any(marker in lowered for marker in _SCRIPT_REFUSED):
        return PermissionDenied(
            namespace, "run a command the hotparams function needs", message.split(" script:")[0]
        )
    return None


#: error codes whose exception is built from the namespace and the message alone
_SIMPLE_ERRORS: dict[str, Callable[[str, str], Exception]] = {
    "HP_NONS": lambda ns, rest: NamespaceNotFound(ns, _tombstone(rest)),
    "HP_DAMAGED": lambda ns, rest: NamespaceDamaged(ns, rest.partition(": ")[2] or rest),
    "HP_SCHEMA": lambda ns, rest: SchemaError(rest),
    "HP_SETTINGS": lambda ns, rest: ConfigError(rest),
}


def decode_error(namespace: str, exc: ErrorReply) -> Exception:
    """The typed exception for an error reply of the Lua library."""
    message = str(exc)
    code, _, rest = message.partition(" ")
    if code == "HP_CONFLICT":
        expected, actual = rest.split()[:2]
        return VersionConflict(namespace, int(expected), int(actual))
    if code == "HP_STALE":
        return Stale(int(rest.split()[0]))
    if code == "HP_INVALID":
        errors: dict[str, str] = {}
        for part in rest.split("; "):
            match = _INVALID_PART.match(part)
            if match:
                errors[match.group(1)] = match.group(2)
            elif errors:
                last = next(reversed(errors))
                errors[last] += "; " + part
        return InvalidParams(namespace, errors or {"*": rest})
    simple = _SIMPLE_ERRORS.get(code)
    if simple is not None:
        return simple(namespace, rest)
    if code == "HP_NOVERSION":
        match = re.search(r"version (\d+)", rest)
        number = int(match.group(1)) if match else -1
        detail = rest[rest.find("(") + 1 : rest.rfind(")")] if "(" in rest else ""
        return VersionNotFound(namespace, number, detail)
    if is_function_missing(exc):
        return LibraryMissing(message)
    denied = permission_denied(namespace, message, exc.noperm)
    if denied is not None:
        return denied
    if "already exists" in message.lower() and "library" in message.lower():
        return LibraryExists(message)
    return ProtocolError(f"unexpected error from Redis for {namespace!r}: {message}")


def _tombstone(message: str) -> Tombstone | None:
    """The tombstone in an HP_NONS reply of a deleted namespace, if any."""
    start, end = message.find("{"), message.rfind("}")
    if " was deleted " not in message or start < 0 or end < start:
        return None
    try:
        doc = loads(message[start : end + 1])
        return Tombstone(
            author=str(doc.get("author", "")),
            reason=str(doc.get("reason", "")),
            source=str(doc.get("source", "")),
            deleted_ms=int(doc.get("ts", 0)),
            epoch=str(doc.get("epoch", "")),
            version=int(doc.get("version", 0)),
        )
    except (ValueError, TypeError, AttributeError):
        return None


# ---------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Head:
    """The current version of a namespace, without its values."""

    version: int
    epoch: str
    committed_ms: int
    schema_rev: int
    #: the content digest of the current version ("" from a library without digests)
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Stored:
    """One version as stored: raw JSON text per field."""

    namespace: str
    version: int
    epoch: str
    committed_ms: int
    schema_rev: int
    #: field -> JSON text, secrets included: left out of repr
    raw: Mapping[str, str] = field(repr=False)
    #: the A/B variants document (JSON) or None; overrides may be secret
    variants: str | None = field(default=None, repr=False)
    #: fields whose stored bytes are not UTF-8 (written around the Lua
    #: functions, e.g. by a raw HSET): field -> reason; such a version is invalid
    damaged: Mapping[str, str] = field(default_factory=dict)
    #: the content digest Redis stored with the version ("" when not asked or unknown)
    digest: str = ""

    def values(self, replacing: Collection[str] = ()) -> dict[str, Any]:
        """The decoded values; InvalidParams if the stored bytes are damaged
        (fields in ``replacing``, about to be overwritten, are left out instead)."""
        damaged = self.damaged
        if damaged:
            unreplaced = {k: v for k, v in damaged.items() if k not in replacing}
            if unreplaced:
                raise InvalidParams(self.namespace, unreplaced)
        else:
            try:  # the common case in one comprehension (codec.loads, without its call)
                return {name: orjson.loads(raw) for name, raw in self.raw.items()}
            except ValueError:
                pass  # the loop below names every field that is not JSON
        out: dict[str, Any] = {}
        bad: dict[str, str] = {}
        for name, raw in self.raw.items():
            if damaged and name in damaged:
                continue
            try:
                out[name] = orjson.loads(raw)
            except ValueError:
                bad[name] = "the stored value is not valid JSON"
        if bad:
            raise InvalidParams(self.namespace, bad)
        return out

    def snapshot(
        self, schema: ParamSchema[Any] | None, secrets: frozenset[str] = frozenset()
    ) -> Snapshot[Any]:
        """Validated by ``schema``; without one, ``secrets`` become SecretStr."""
        values = self.values()
        if schema is not None:
            params: BaseModel = schema.validate(self.namespace, values)
        else:
            params = AnyParams(
                **{k: SecretStr(str(v)) if k in secrets else v for k, v in values.items()}
            )
        return Snapshot(
            namespace=self.namespace,
            version=self.version,
            epoch=self.epoch,
            params=params,
            committed_ms=self.committed_ms,
            schema_rev=self.schema_rev,
            values=frozen_mapping(values),
            variants=VariantSet.from_json(self.variants),
            digest=self.digest,
        )


def parse_stored(namespace: str, reply: Sequence[Any]) -> Stored:
    if not isinstance(reply, (list, tuple)) or len(reply) < 4 or len(reply) % 2:
        raise ProtocolError(f"unexpected hp_get reply for {namespace!r}")
    raw: dict[str, str] = {}
    damaged: dict[str, str] = {}
    for i in range(4, len(reply), 2):
        name, bad_name = lenient_text(reply[i])
        value, bad_value = lenient_text(reply[i + 1])
        raw[name] = value
        if bad_name or bad_value:
            damaged[name] = (
                "the stored bytes are not UTF-8 (written around hotparams' functions?); "
                "write a new value or roll back"
            )
    variants = raw.pop(VARIANTS_FIELD, None)
    digest = raw.pop(DIGEST_FIELD, "")
    return Stored(
        namespace=namespace,
        version=int(reply[0]),
        epoch=text(reply[1]),
        committed_ms=int(reply[2]),
        schema_rev=int(reply[3]),
        raw=raw,
        variants=variants,
        damaged=frozen_mapping(damaged),
        digest=digest,
    )


def parse_head(namespace: str, reply: Sequence[Any]) -> Head:
    if not isinstance(reply, (list, tuple)) or len(reply) not in (4, 5):
        raise ProtocolError(f"unexpected hp_head reply for {namespace!r}")
    digest = text(reply[4]) if len(reply) == 5 else ""
    return Head(int(reply[0]), text(reply[1]), int(reply[2]), int(reply[3]), digest)


# ---------------------------------------------------------------- operations


@dataclass(frozen=True, slots=True)
class Who:
    """Who makes a change, why, and from where (all go to the audit)."""

    author: str
    reason: str = ""
    source: str = ""

    def args(self) -> tuple[str, ...]:
        source = self.source or default_source()
        return ("@author", self.author, "@reason", self.reason, "@source", source)


def new_request_id() -> str:
    """A write's request id (``@rid``): the Bus sends it again with every
    retry of that write, and Redis answers a retry of a write that already
    committed with its version instead of applying it twice."""
    return os.urandom(12).hex()  # secrets.token_hex(12), without its two calls


@cache
def _hostname() -> str:
    return socket.gethostname()


def default_source() -> str:
    return f"python:{_hostname()}:{os.getpid()}"


@cache
def default_author() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no user name in a container is normal
        return f"uid:{os.getuid()}"


@dataclass(frozen=True, slots=True)
class Registered:
    """What registering did.  ``kept_rules`` names the fields (and, as
    ``@key``, other parts of the schema) whose stored rule differs from the
    model's and was kept: registering never changes a stored rule, a
    migration does (:meth:`hotparams.Bus.migrate`)."""

    version: int
    schema_rev: int
    created: bool
    new_revision: bool
    kept_rules: tuple[str, ...] = ()


#: how often registering re-reads the stored schema after a concurrent change
MAX_REGISTER_RETRIES = 16


def register_op(
    keys: Keys,
    schema: ParamSchema[Any],
    *,
    epoch: str,
    who: Who,
    initial: Mapping[str, Any] | None,
    settings: Mapping[str, int],
    explicit: Mapping[str, int] | None = None,
    allow_raw_writes: bool = False,
) -> Op[Registered]:
    """Register ``schema``: ``settings`` for a new namespace, ``explicit``
    settings that must hold for an existing one (else ConfigError).

    The model's rules are sent as they are; if Redis answers that they
    drop or change stored fields (another release registered first), the
    stored schema extended with the model's new fields is sent instead
    (see :func:`hotparams.evolution.extended_rules`).
    """
    from .evolution import extended_rules

    ns = keys.namespace
    if initial is not None:
        schema.check_names(ns, initial)
    params = schema.validate(ns, dict(initial or {}))
    values = schema.encode(ns, params, schema.fields)
    options: dict[str, Any] = {
        "epoch": epoch,
        "author": who.author,
        "reason": who.reason,
        "source": who.source or default_source(),
        "defaults": dict(settings),
        **(explicit or {}),
    }
    pairs: list[str] = []
    for name, raw in values.items():
        pairs += [name, raw]
    # the opt-in travels in the rules document (a new schema revision when it changes)
    model_rules = {**schema.rules, "allow_raw_writes": True} if allow_raw_writes else schema.rules
    rules_json = dumps(model_rules) if allow_raw_writes else schema.rules_json
    kept: tuple[str, ...] = ()
    for _ in range(MAX_REGISTER_RETRIES):
        try:
            reply = yield FCall("hp_register", ns, (rules_json, dumps(options), *pairs))
        except (SchemaError, Stale):
            head = yield from head_op(keys)
            raw = yield Command(ns, ("HGET", keys.schema, str(head.schema_rev)))
            if not raw:
                continue
            merged, kept = extended_rules(loads(raw), model_rules)
            rules_json = dumps(merged)
            options["base_rev"] = head.schema_rev
            continue
        version, rev, created, new_rev = (int(x) for x in reply)
        return Registered(version, rev, bool(created), bool(new_rev), kept)
    raise SchemaError(f"the schema of {ns!r} kept changing while registering; giving up")


def get_op(keys: Keys, version: int | None = None) -> Op[Stored]:
    args = ("" if version is None else str(int(version)), "digest")
    reply = yield FCall("hp_get", keys.namespace, args, readonly=True)
    return parse_stored(keys.namespace, reply)


def rules_op(keys: Keys, schema_rev: int | None = None) -> Op[dict[str, Any]]:
    """The validation rules of one schema revision (default: the current
    one); ``{"fields": {}}`` when that revision is not stored."""
    if schema_rev is None:
        schema_rev = (yield from head_op(keys)).schema_rev
    raw = yield Command(keys.namespace, ("HGET", keys.schema, str(schema_rev)))
    return loads(raw) if raw else {"fields": {}}


def head_op(keys: Keys, *, digest: bool = True) -> Op[Head]:
    """The current version; with ``digest`` its content digest too, after
    Redis checked that the version's hash still holds it (else NamespaceDamaged)."""
    args = ("digest",) if digest else ()
    reply = yield FCall("hp_head", keys.namespace, args, readonly=True)
    return parse_head(keys.namespace, reply)


def history_op(keys: Keys, limit: int = 50) -> Op[list[Change]]:
    if limit < 1:
        raise ValueError("limit must be at least 1")
    reply = yield Command(keys.namespace, ("XREVRANGE", keys.audit, "+", "-", "COUNT", str(limit)))
    return [parse_change(keys.namespace, entry_id, fields) for entry_id, fields in reply]


def _decoded(data: Mapping[str, str], key: str, default: Any, damaged: list[str]) -> Any:
    """An audit entry's JSON field (``default`` when missing; when damaged, noted)."""
    if key not in data:
        return default
    try:
        return loads(data[key])
    except ValueError:
        damaged.append(key)
        return default


def _int(value: str | None) -> int:
    """An audit entry's number (0 when missing or damaged)."""
    try:
        return int(value or "0")
    except ValueError:
        return 0


def parse_change(namespace: str, entry_id: Any, fields: Mapping[Any, Any]) -> Change:
    """One audit entry, as redis-py decodes an ``XREVRANGE`` entry (its
    fields as a dict, in RESP2 and RESP3 alike)."""
    data: dict[str, str] = {}
    damaged: list[str] = []
    for key, value in fields.items():
        name, bad_name = lenient_text(key)
        data[name], bad_value = lenient_text(value)
        if bad_name or bad_value:
            damaged.append(name)
    try:
        decoded = loads(data.get("changes", "{}"))
        changes = {name: FieldChange(pair[0], pair[1]) for name, pair in decoded.items()}
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        changes = {}
        damaged.append("changes")
    target = data.get("target")
    variants = _decoded(data, "variants", None, damaged)
    try:
        settings = {
            name: FieldChange(pair[0], pair[1])
            for name, pair in _decoded(data, "settings", {}, damaged).items()
        }
    except (TypeError, AttributeError, IndexError, KeyError):
        settings = {}
        damaged.append("settings")
    migration = _decoded(data, "migration", {}, damaged)
    return Change(
        namespace=namespace,
        version=_int(data.get("v")),
        previous=_int(data.get("prev")),
        op=data.get("op", ""),
        author=data.get("author", ""),
        reason=data.get("reason", ""),
        source=data.get("source", ""),
        committed_ms=_int(data.get("ts")),
        schema_rev=_int(data.get("schema")),
        changes=frozen_mapping(changes),
        target=_int(target) if target else None,
        entry_id=lenient_text(entry_id)[0],
        variants=(variants or {}) if "variants" in data else None,
        settings=frozen_mapping(settings),
        migration=frozen_mapping(migration if isinstance(migration, dict) else {}),
        damaged=tuple(sorted(set(damaged))),
    )
