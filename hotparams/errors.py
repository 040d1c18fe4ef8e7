"""The error tree of hotparams: every exception it raises on purpose is a
:class:`HotParamsError`.

::

    HotParamsError
     ├── ConnectionFailed      Redis unreachable (after bounded, jittered retries)
     ├── InvalidNamespace      a malformed namespace name (also a ValueError)
     ├── InvalidParams         values that break the schema; one message per field
     │                         (also a ValueError)
     ├── VersionConflict       a failed ``expect_version`` (compare-and-set)
     ├── NamespaceNotFound     the namespace was never registered, was lost or
     │                         deleted (also a LookupError)
     ├── NamespaceDamaged      part of the namespace's state is gone: restore it
     ├── VersionNotFound       the version is not retained (also a LookupError)
     ├── SchemaError           a model that cannot describe a parameter set
     │                         (also a TypeError)
     ├── PermissionDenied      Redis refused the call to this ACL user (NOPERM)
     ├── LibraryMismatch       the Lua library in Redis is missing, older than
     │                         this client needs, or newer and incompatible
     ├── ReplicationLagging    a committed write fewer replicas acknowledged
     │                         than ``min_replica_acks`` asks (WAIT)
     ├── ProtocolError         an unexpected reply, e.g. from an incompatible library
     ├── ConfigError           an unknown or out-of-range setting (also a
     │                         ValueError; defined in :mod:`hotparams.config`)
     ├── BatchError            some changes of a ``set_many`` failed, the others
     │                         were committed (defined in :mod:`hotparams.writes`)
     └── DemoError             ``hotparams demo`` cannot run (also a RuntimeError)

What each one means to the CLI (exit code), the admin API (HTTP status)
and the console is one table, :data:`hotparams.outcomes.OUTCOMES`.
Exceptions carry their context as attributes; their messages never contain
a secret value or a Redis password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "ConnectionFailed",
    "DemoError",
    "HotParamsError",
    "InvalidNamespace",
    "InvalidParams",
    "LibraryMismatch",
    "NamespaceDamaged",
    "NamespaceNotFound",
    "PermissionDenied",
    "ProtocolError",
    "ReplicationLagging",
    "SchemaError",
    "Tombstone",
    "VersionConflict",
    "VersionNotFound",
]


class HotParamsError(Exception):
    """The root of every error hotparams raises."""


class ConnectionFailed(HotParamsError):
    """Redis could not be reached; ``target`` is the URL without its password."""

    def __init__(self, target: str, cause: str) -> None:
        self.target = target
        self.cause = cause
        super().__init__(f"Redis unreachable at {target}: {cause}")


class InvalidNamespace(HotParamsError, ValueError):
    """A namespace name that is not 1-64 of ``[A-Za-z0-9_.-]`` (leading alnum)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        super().__init__(
            f"invalid namespace {namespace!r}: must be 1-64 characters of letters, "
            'digits, "_", "." or "-", starting with a letter or digit'
        )


#: the key in ``InvalidParams.errors`` of a rule of no single field (a
#: cross-field validator); "variant NAME *" for such a rule of a variant
CROSS_FIELD = "*"


def _problem(field: str, reason: str) -> str:
    """``field: reason``; a cross-field rule said without its star."""
    if field == CROSS_FIELD:
        return reason
    if field.endswith(f" {CROSS_FIELD}"):
        return f"{field[: -len(CROSS_FIELD) - 1]}: {reason}"
    return f"{field}: {reason}"


class InvalidParams(HotParamsError, ValueError):
    """Values that break the schema. ``errors`` maps each field to its reason
    (``"*"`` for a cross-field rule)."""

    def __init__(self, namespace: str, errors: Mapping[str, str]) -> None:
        self.namespace = namespace
        self.errors: dict[str, str] = dict(errors)
        detail = "; ".join(_problem(field, reason) for field, reason in self.errors.items())
        super().__init__(f"invalid parameters for {namespace!r}: {detail}")


class VersionConflict(HotParamsError):
    """``expect_version`` did not match the namespace's current version."""

    def __init__(self, namespace: str, expected: int, actual: int) -> None:
        self.namespace = namespace
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"version conflict on {namespace!r}: expected version {expected}, current is {actual}"
        )


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What a deleted namespace leaves behind: who deleted it, when, why,
    and the history (epoch) and version it had."""

    author: str
    reason: str
    source: str
    deleted_ms: int
    epoch: str
    version: int

    @property
    def deleted_at(self) -> datetime:
        return datetime.fromtimestamp(self.deleted_ms / 1000, UTC)

    def describe(self) -> str:
        when = self.deleted_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        why = f" ({self.reason})" if self.reason else ""
        return f"deleted by {self.author or '?'} at {when}{why}"


class NamespaceNotFound(HotParamsError, LookupError):
    """The namespace does not exist in Redis; ``deleted`` is its tombstone
    when it was deleted (:meth:`hotparams.Bus.delete`), else None."""

    def __init__(self, namespace: str, deleted: Tombstone | None = None) -> None:
        self.namespace = namespace
        self.deleted = deleted
        if deleted is None:
            message = f"namespace {namespace!r} does not exist (register it first)"
        else:
            message = (
                f"namespace {namespace!r} was {deleted.describe()}; "
                "registering it again starts a new history"
            )
        super().__init__(message)


class NamespaceDamaged(HotParamsError):
    """Part of a namespace's state is gone (a version hash missing or
    incomplete, or its meta lost while the rest remains): the write was
    refused, nothing was written. ``detail`` says what is missing; restore
    the namespace from a worker's cache file (``hotparams restore NS
    --from-cache FILE``)."""

    def __init__(self, namespace: str, detail: str) -> None:
        self.namespace = namespace
        self.detail = detail
        super().__init__(f"namespace {namespace!r} is damaged: {detail}")


class VersionNotFound(HotParamsError, LookupError):
    """The version asked for is not retained."""

    def __init__(self, namespace: str, version: int, detail: str = "") -> None:
        self.namespace = namespace
        self.version = version
        msg = f"version {version} of {namespace!r} is not retained"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class SchemaError(HotParamsError, TypeError):
    """A model that cannot be used as a parameter schema."""


class ProtocolError(HotParamsError):
    """Redis answered something this client does not understand."""


class PermissionDenied(HotParamsError):
    """Redis refused the call to this client's ACL user; ``permission`` names
    what is missing (``"function|load"``, ``"PUBLISH hp:{chat}:events"``, ...).

    A refused write changed nothing: the library checks the user's
    permissions before its first write.
    """

    def __init__(self, namespace: str, permission: str, detail: str = "") -> None:
        self.namespace = namespace
        self.permission = permission
        self.detail = detail
        where = f" on {namespace!r}" if namespace else ""
        super().__init__(
            f"permission denied{where}: this Redis user may not {permission}"
            + (f" ({detail})" if detail else "")
        )


class LibraryMismatch(HotParamsError):
    """The hotparams functions in Redis do not fit this client.

    ``installed`` and ``wanted`` describe the library in Redis (``None``:
    none) and this client's own (:class:`hotparams.library.LibraryInfo`);
    ``permission`` is set when Redis refused this client's ``FUNCTION LOAD``.
    """

    def __init__(
        self, message: str, *, installed: object = None, wanted: object = None, permission: str = ""
    ) -> None:
        self.installed = installed
        self.wanted = wanted
        self.permission = permission
        super().__init__(message)


class DemoError(HotParamsError, RuntimeError):
    """The demo cannot run (no Redis to start, no fleet to run, a worker failed)."""


class ReplicationLagging(HotParamsError):
    """A write committed on the master, but fewer replicas than
    ``Settings.min_replica_acks`` acknowledged it within
    ``replica_ack_timeout`` (``WAIT``): a failover now could lose it.

    The write is not undone; ``version`` is the committed version (0 when
    unknown), ``acks`` the replicas that acknowledged it, ``wanted`` the
    setting.  Do not retry the change blindly: read the head first."""

    def __init__(
        self,
        namespace: str,
        version: int,
        acks: int,
        wanted: int,
        timeout: float,
        detail: str = "",
    ) -> None:
        self.namespace = namespace
        self.version = version
        self.acks = acks
        self.wanted = wanted
        self.timeout = timeout
        what = f"version {version} of {namespace!r}" if version else f"the write to {namespace!r}"
        why = f" (WAIT failed: {detail})" if detail else ""
        super().__init__(
            f"{what} is committed on the master, but {acks} of the {wanted} replicas wanted "
            f"acknowledged it within {timeout:g} s{why}; a failover before they do would lose it"
        )
