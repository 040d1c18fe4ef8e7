"""What a failure means to whoever asked (I/O-free): one table for every face.

The CLI turns an exception into an exit code (and, with ``--json``, the
name of that code), the admin API into an HTTP status and an error code,
the console into an error page with that status.  :data:`OUTCOMES` is the
one table they all read: each error class of hotparams, and each error
the faces raise themselves (defined here, so that the table holds them
too), has one row.  The first row whose class matches wins, so a subclass
comes before its base.

Exit codes (docs/cli.md lists them too):

====  ==================================================================
0     ok
1     any other failure (an unexpected reply, an internal error)
2     usage: a bad flag or argument, ``key`` without ``=``, a malformed
      namespace name, a ``--schema`` module or attribute that cannot be
      imported, an invalid ``--url``
3     invalid value: a value that does not parse as the field's type or
      breaks the schema, an unknown field, a model that is not a schema
4     version conflict (``--expect-version``)
5     Redis unreachable
6     not found: the namespace, the version or the variant does not exist
7     ``--wait``: not every live worker applied the change in time
8     permission denied: the Redis user's ACL refused the call (also a
      library this user may not install: run ``hotparams install`` as an admin)
130   interrupted (Ctrl-C), except ``watch``, which stops with 0
====  ==================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from . import errors as e
from .config import ConfigError
from .writes import BatchError

__all__ = [
    "EXIT_NAMES",
    "FAILURE",
    "OUTCOMES",
    "BadRequest",
    "NotConverged",
    "NotFound",
    "NotServed",
    "Outcome",
    "UsageProblem",
    "outcome_of",
]


class UsageProblem(ValueError):
    """A command line that cannot mean anything (exit 2)."""


class BadRequest(Exception):
    """A malformed body, query or form of the admin API or the console (400)."""


class NotFound(LookupError):
    """Something named on the command line does not exist, e.g. a variant (exit 6)."""


class NotServed(LookupError):
    """A namespace the admin API or the console does not serve (404)."""

    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {namespace!r} is not served by this app")


class NotConverged(RuntimeError):
    """``--wait`` ran out of time before every live worker applied the change (exit 7)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one kind of failure is to each face."""

    #: the CLI's exit code (named in :data:`EXIT_NAMES`)
    exit_code: int
    #: the HTTP status of the admin API and the console
    status: int
    #: the admin API's ``"error"`` code
    code: str


#: exit code -> its name (``--json`` errors of the CLI carry both)
EXIT_NAMES: dict[int, str] = {
    0: "ok",
    1: "failure",
    2: "usage",
    3: "invalid_value",
    4: "version_conflict",
    5: "unreachable",
    6: "not_found",
    7: "wait_timeout",
    8: "permission_denied",
    130: "interrupted",
}

_BAD_REQUEST = Outcome(2, 400, "bad_request")
_INVALID = Outcome(3, 400, "invalid_params")
_NOT_FOUND = Outcome(6, 404, "not_found")
_DENIED = Outcome(8, 403, "permission_denied")
#: anything without a row of its own: an unexpected error
FAILURE = Outcome(1, 500, "internal")

#: error class -> outcome; the first match (in this order) wins
OUTCOMES: tuple[tuple[type[BaseException], Outcome], ...] = (
    (UsageProblem, _BAD_REQUEST),
    (BadRequest, _BAD_REQUEST),
    (e.InvalidNamespace, _BAD_REQUEST),
    (ConfigError, _BAD_REQUEST),
    (e.InvalidParams, _INVALID),
    (e.SchemaError, _INVALID),
    (e.VersionConflict, Outcome(4, 409, "version_conflict")),
    (e.ConnectionFailed, Outcome(5, 503, "redis_unavailable")),
    (e.NamespaceNotFound, _NOT_FOUND),
    (e.VersionNotFound, _NOT_FOUND),
    (NotFound, _NOT_FOUND),
    (NotServed, _NOT_FOUND),
    (NotConverged, Outcome(7, 504, "wait_timeout")),
    (e.PermissionDenied, _DENIED),
    (e.NamespaceDamaged, Outcome(1, 500, "namespace_damaged")),
    (e.LibraryMismatch, Outcome(1, 500, "library_mismatch")),
    (e.ProtocolError, Outcome(1, 500, "protocol_error")),
    # committed, but not on enough replicas: not a retry (it would write twice)
    (e.ReplicationLagging, Outcome(1, 500, "replication_lagging")),
    (BatchError, Outcome(1, 500, "batch_failed")),
    (e.DemoError, Outcome(1, 500, "demo_failed")),
    (e.HotParamsError, FAILURE),
)


def outcome_of(exc: BaseException) -> Outcome:
    """The row of ``exc`` (:data:`FAILURE` if none matches)."""
    if isinstance(exc, e.LibraryMismatch) and exc.__dict__.get("permission"):
        return _DENIED  # Redis refused this user's FUNCTION LOAD
    for kind, outcome in OUTCOMES:
        if isinstance(exc, kind):
            return outcome
    return FAILURE
