"""Writes acknowledged by replicas (``WAIT``), free of I/O.

Redis replicates asynchronously: a write the master acknowledged and a
failover promoted a replica before receiving it is lost.  With
``Settings.min_replica_acks = n`` every write is followed by
``WAIT n <replica_ack_timeout ms>``, and fewer acknowledgements raise
:class:`~hotparams.errors.ReplicationLagging` (the write itself is
committed on the master; it is not undone).

``WAIT`` counts the replicas that acknowledged the *connection's* last
write, so it must follow the write on the same connection.  The bus sends
each call on a connection of its pool, not necessarily the one before, so
the write and its ``WAIT`` travel as one :class:`~hotparams.protocol.Batch`
(one pipeline: one connection, in order).  A retried write whose first
attempt had committed (same request id) writes nothing the second time:
its ``WAIT`` then counts the replicas of whatever master answered, which
already holds the write (it returned the first attempt's result from the
request ids that replicated with it).

Fleet reports (``hp_report``, ``hp_reports``, ``hp_leave``, ``hp_expose``)
are not waited for: a lost heartbeat is renewed by the next.
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

from .config import Settings
from .errors import HotParamsError, ReplicationLagging
from .protocol import Batch, Call, Command, FCall, LibraryMissing, Op

__all__ = ["acknowledged", "wait_command"]

T = TypeVar("T")

#: writes of the fleet's own keys: never waited for
_FLEET_FUNCTIONS = frozenset({"hp_report", "hp_reports", "hp_leave", "hp_expose"})


def acknowledged(op: Op[T], settings: Settings) -> Op[T]:
    """``op`` with each of its writes followed by ``WAIT`` (when
    ``settings.min_replica_acks`` asks for it; else ``op`` itself)."""
    if settings.min_replica_acks <= 0:
        return op
    return _acknowledged(op, settings.min_replica_acks, settings.replica_ack_timeout)


def wait_command(namespace: str, replicas: int, timeout: float) -> Command:
    """``WAIT replicas timeout_ms`` (at least 1 ms: 0 would wait forever)."""
    return Command(namespace, ("WAIT", str(replicas), str(max(1, round(timeout * 1000)))))


def _is_write(call: Call) -> bool:
    return isinstance(call, FCall) and not call.readonly and call.function not in _FLEET_FUNCTIONS


def _acknowledged(op: Op[T], wanted: int, timeout: float) -> Op[T]:
    try:
        call = next(op)
        while True:
            try:
                reply = yield from _send(call, wanted, timeout)
            except ReplicationLagging:
                op.close()
                raise
            except Exception as exc:  # the call's own error: the op may handle it
                call = op.throw(exc)
            else:
                call = op.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _send(call: Call, wanted: int, timeout: float) -> Op[Any]:
    """One call of the op; a write (or a batch with writes) with its WAIT."""
    if isinstance(call, Batch):
        if not any(_is_write(inner) for inner in call.calls):
            return (yield call)
        *replies, acks = yield Batch((*call.calls, wait_command(call.namespace, wanted, timeout)))
        _check(call.namespace, replies, acks, wanted, timeout)
        return replies
    if not isinstance(call, FCall) or not _is_write(call):
        return (yield call)
    batch = Batch((call, wait_command(call.namespace, wanted, timeout)))
    reply, acks = yield batch
    if isinstance(reply, LibraryMissing):
        yield from _reload(call)
        reply, acks = yield batch  # the same request id: never applied twice
    if isinstance(reply, Exception):
        raise reply
    _check(call.namespace, [reply], acks, wanted, timeout)
    return reply


def _reload(call: Call) -> Op[None]:
    """Let the driver reload the library Redis lost: it does so for any
    call that meets a missing function (here a cheap read)."""
    with contextlib.suppress(HotParamsError):  # e.g. a namespace the write creates
        yield FCall("hp_head", call.namespace, (), readonly=True)


def _version(reply: Any) -> int:
    """The version a write's reply names (hp_commit: the version; others: first)."""
    if isinstance(reply, (list, tuple)) and reply:
        reply = reply[0]
    try:
        return int(reply)
    except (TypeError, ValueError):
        return 0


def _check(namespace: str, replies: list[Any], acks: Any, wanted: int, timeout: float) -> None:
    if isinstance(acks, Exception):  # e.g. an ACL user without +wait
        raise ReplicationLagging(namespace, _committed(replies), 0, wanted, timeout, str(acks))
    if int(acks) < wanted:
        raise ReplicationLagging(namespace, _committed(replies), int(acks), wanted, timeout)


def _committed(replies: list[Any]) -> int:
    versions = [_version(r) for r in replies if not isinstance(r, Exception)]
    return max(versions, default=0)
