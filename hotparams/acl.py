"""Least-privilege Redis users for hotparams (I/O-free): the ``ACL SETUSER``
rules of each role, for namespaces named by glob patterns.

Redis runs a function with its caller's permissions: every command the
Lua library calls, every key it touches and the channel it publishes to
are checked against the ACL user that sent ``FCALL``.  So a role is the
commands and keys of the functions it may run, and the refusals are
Redis's own:

``viewer``
    read the values, the history and the fleet's reports; follow changes.
``worker``
    what a :class:`~hotparams.Live` handle does: read and follow, report
    itself (``hp_report``, or with the other handles of its process
    ``hp_reports``; ``hp_leave``) and count exposures (``hp_expose``).
    Its keys are read-only but for the fleet's three; it has no
    ``PUBLISH`` and no ``FUNCTION``.
``editor``
    every write verb of its namespaces (set, unset, rollback, variants,
    restore, configure, delete): every key of the namespaces, and
    ``PUBLISH`` on their channels; no ``FUNCTION``, no ``FLUSH*``, no other keys.
``admin``
    the editor's rights and ``FUNCTION LOAD``/``LIST`` (``hotparams install``).

Keys: ``FCALL`` names the bare namespace as its key (``KEYS[1]``, for
cluster routing), so each role has a *selector* ``(~<ns> +fcall +fcall_ro)``
that grants that name to the two call commands only: no other command
can touch a key of that name.  The namespace's own keys are
``hp:{<ns>}:*``, its channel ``hp:{<ns>}:events``.

What a role cannot stop: a user that may run the library's data commands
on its keys (an editor's ``HSET``, a worker's ``HSET`` of its fleet keys)
can run them directly too, without the library's checks.  Give the
editor role to people and programs trusted with those namespaces.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .keys import PREFIX
from .protocol import Command, Op

__all__ = ["ROLES", "AclUser", "acl_user", "check_pattern", "check_user", "setuser_op"]

#: what every client sends when it connects (``client|setname``: the
#: connection's name, ``select``: a URL's database)
CONNECT = ("ping", "hello", "select", "client|setname")
#: the reads of the library's functions and of the clients (a schema, the
#: audit stream, exposure counts); ``scan`` lists namespaces (it shows key
#: names, not contents, and ACLs cannot restrict it)
READ = (
    "time",
    "hget",
    "hgetall",
    "hmget",
    "hexists",
    "hlen",
    "exists",
    "xrevrange",
    "xrange",
    "zrangebyscore",
    "zcount",
    "zcard",
    "zscore",
    "zmscore",
    "zscan",
    "pttl",
)
LIST = ("scan",)
#: a Live handle follows the namespace's channel (sharded in a cluster)
FOLLOW = ("subscribe", "unsubscribe", "ssubscribe", "sunsubscribe")
#: what hp_report, hp_reports, hp_leave and hp_expose write (the fleet's keys only)
REPORT = ("zadd", "zrem", "hset", "hdel", "hincrby", "pexpire")
#: what the write functions do: versions, meta, schema, audit, request
#: ids (kept a while: pexpire; the oldest trimmed: zrange + zrem), the event
WRITE = (
    "hset",
    "hdel",
    "hincrby",
    "del",
    "unlink",
    "xadd",
    "xtrim",
    "zadd",
    "zrem",
    "zrange",
    "pexpire",
    "publish",
    "spublish",
    "wait",
)
INSTALL = ("function|load", "function|list")

#: the fleet keys a worker writes (suffixes of ``hp:{<ns>}:``), besides
#: its own reports' ``workers:u:<user>`` (hotparams/lua/fleet.lua): it may
#: not write another user's reports
WORKER_KEYS = ("workers", "exposures")


@dataclass(frozen=True, slots=True)
class Role:
    """The commands of a role, and whether it writes every key or only the fleet's."""

    name: str
    commands: tuple[str, ...]
    writes: bool  # every key of its namespaces (else read-only but the fleet's)
    reports: bool  # the fleet's keys (a worker)
    publishes: bool
    summary: str


ROLES: dict[str, Role] = {
    "viewer": Role(
        "viewer",
        (*CONNECT, *READ, *LIST, *FOLLOW),
        writes=False,
        reports=False,
        publishes=False,
        summary="read values, history and fleet status; follow changes; no writes",
    ),
    "worker": Role(
        "worker",
        (*CONNECT, *READ, *FOLLOW, *REPORT),
        writes=False,
        reports=True,
        publishes=False,
        summary="read and follow, report itself, count exposures; "
        "no writes to versions, no PUBLISH, no FUNCTION",
    ),
    "editor": Role(
        "editor",
        (*CONNECT, *READ, *LIST, *FOLLOW, *WRITE),
        writes=True,
        reports=True,
        publishes=True,
        summary="every write verb of the namespaces; no FUNCTION, no FLUSH, no other keys",
    ),
    "admin": Role(
        "admin",
        (*CONNECT, *READ, *LIST, *FOLLOW, *WRITE, *INSTALL),
        writes=True,
        reports=True,
        publishes=True,
        summary="the editor's rights and loading the library (hotparams install)",
    ),
}

#: a namespace pattern: namespace characters and the globs * and ?
_PATTERN = re.compile(r"[A-Za-z0-9_.\-*?]{1,64}")
_USER = re.compile(r"[A-Za-z0-9_.@\-]{1,128}")


def check_pattern(pattern: str) -> str:
    """A namespace glob (``chat``, ``team-*``), else ValueError."""
    if not _PATTERN.fullmatch(pattern) or pattern[0] in ".-_":
        raise ValueError(
            f"namespace pattern {pattern!r}: must be 1-64 characters of letters, digits, "
            '"_", "." or "-" and the globs "*" and "?"'
        )
    return pattern


def check_user(name: str) -> str:
    if not _USER.fullmatch(name) or name == "default":
        raise ValueError(
            f"user name {name!r}: must be 1-128 characters of letters, digits, "
            '"_", ".", "@" or "-" (and not "default")'
        )
    return name


@dataclass(frozen=True, slots=True)
class AclUser:
    """One ``ACL SETUSER``: the user, its role, and the rules in order."""

    name: str
    role: str
    namespaces: tuple[str, ...]
    rules: tuple[str, ...]

    def command(self) -> tuple[str, ...]:
        """The arguments to send as they are (the selector is one argument)."""
        return ("ACL", "SETUSER", self.name, *self.rules)

    def line(self) -> str:
        """One line for ``redis-cli`` or, without ``ACL SETUSER``, an ACL file
        (``user NAME ...``); Redis joins a selector split at its spaces."""
        return " ".join(self.command())

    def file_line(self) -> str:
        return " ".join(("user", self.name, *self.rules))


def acl_user(
    role: str, namespaces: Sequence[str], user: str, password: str | None = None
) -> AclUser:
    """The rules of ``role`` on ``namespaces`` for ``user``.

    With ``password`` the user is reset and gets that password (as its
    SHA-256: the line never holds it in clear); without, only its
    permissions are replaced and its passwords kept.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if not namespaces:
        raise ValueError("at least one --namespace pattern is needed")
    spec = ROLES[role]
    check_user(user)
    patterns = tuple(dict.fromkeys(check_pattern(p) for p in namespaces))
    rules: list[str] = []
    if password is not None:
        if not password:
            raise ValueError("the password is empty")
        digest = hashlib.sha256(password.encode()).hexdigest()
        rules += ["reset", "on", f"#{digest}"]
    else:
        rules += ["on", "resetkeys", "resetchannels", "clearselectors", "-@all"]
    for pattern in patterns:
        base = f"{PREFIX}:{{{pattern}}}"
        if spec.writes:
            rules.append(f"~{base}:*")
        else:
            rules.append(f"%R~{base}:*")
            if spec.reports:
                rules += [f"~{base}:{suffix}" for suffix in WORKER_KEYS]
                rules.append(f"~{base}:workers:u:{user}")
        rules.append(f"&{base}:events")
    rules += [f"+{command}" for command in dict.fromkeys(spec.commands)]
    # the bare names (FCALL's KEYS[1]) for the call commands alone
    calls = spec.writes or spec.reports
    bare = " ".join(f"{'~' if calls else '%R~'}{p}" for p in patterns)
    rules.append(f"({bare} {'+fcall +fcall_ro' if calls else '+fcall_ro'})")
    return AclUser(user, role, patterns, tuple(rules))


def setuser_op(user: AclUser) -> Op[Any]:
    """Send ``user``'s ``ACL SETUSER`` (``hotparams acl --apply``; an admin's call)."""
    return (yield Command("", user.command()))
