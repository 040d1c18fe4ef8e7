"""The Redis keys and the channel of a namespace (:class:`Keys`), and the
rule for namespace names.  The Lua library builds the same names
(``hotparams/lua/hotparams.lua``; docs/implementation.md lists them all).

All keys of a namespace share the hash tag ``{<namespace>}``, so they live
in one Redis Cluster slot together with the bare namespace name that the
Lua functions receive as ``KEYS[1]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidNamespace

__all__ = ["PREFIX", "Keys", "check_namespace", "keys_for"]

PREFIX = "hp"
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def check_namespace(namespace: object) -> str:
    """Return ``namespace`` if it is a valid name, else raise InvalidNamespace."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise InvalidNamespace(str(namespace))
    return namespace


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one namespace (see docs/implementation.md)."""

    namespace: str

    @property
    def base(self) -> str:
        return f"{PREFIX}:{{{self.namespace}}}"

    @property
    def meta(self) -> str:
        """Hash: current version, epoch, commit time, schema revision, settings."""
        return f"{self.base}:meta"

    @property
    def schema(self) -> str:
        """Hash: schema revision -> validation rules (JSON)."""
        return f"{self.base}:schema"

    @property
    def audit(self) -> str:
        """Stream: one entry per change (who, when, why, from where, what)."""
        return f"{self.base}:audit"

    @property
    def channel(self) -> str:
        """Pub/sub channel: one JSON event per change."""
        return f"{self.base}:events"

    @property
    def requests(self) -> str:
        """Hash: request id of a committed write -> the version it made."""
        return f"{self.base}:rids"

    @property
    def requests_at(self) -> str:
        """Sorted set: request id -> when it committed (ms), for trimming."""
        return f"{self.base}:rids:at"

    @property
    def workers(self) -> str:
        """Sorted set: "<acl user>\\n<worker id>" -> expiry of its report (ms)."""
        return f"{self.base}:workers"

    @property
    def workers_info(self) -> str:
        """The prefix of the per-user report keys (see :meth:`reports_of`)."""
        return f"{self.base}:workers:u:"

    def reports_of(self, user: str) -> str:
        """Hash: worker id -> its last report (JSON), of one ACL user."""
        return f"{self.base}:workers:u:{user}"

    @property
    def exposures(self) -> str:
        """Hash: "<salt>:<variant>" -> assignments counted by workers."""
        return f"{self.base}:exposures"

    def version(self, number: int) -> str:
        """Hash: the complete, immutable values of one version."""
        return f"{self.base}:v:{number}"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of the namespace."""
        return f"{self.base}:*"


def keys_for(namespace: str) -> Keys:
    return Keys(check_namespace(namespace))
