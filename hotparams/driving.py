"""Running a conversation to its end, blocking or awaited: the one seam
between the I/O-free generators (a bus's operations, a live handle's
listener and reporter) and the code that performs their actions.

A conversation yields actions and receives their results; what an action
raises is thrown into it, which may handle it.  :func:`converse` performs
each action with a plain call, :func:`aconverse` awaits it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["Stopped", "aconverse", "converse", "resume"]

A = TypeVar("A")


class Stopped(BaseException):
    """The handle is closing: a driver raises it instead of performing an
    action (a BaseException, like asyncio's CancelledError, so that no
    ``except Exception`` of a conversation mistakes it for a failure)."""


T = TypeVar("T")


def resume(
    conversation: Generator[A, Any, T], reply: Any = None, error: BaseException | None = None
) -> tuple[bool, Any]:
    """Send ``reply`` (or throw ``error``) in: ``(True, result)`` once the
    conversation returned, else ``(False, its next action)``."""
    try:
        return False, conversation.send(reply) if error is None else conversation.throw(error)
    except StopIteration as stop:
        return True, stop.value


def converse(conversation: Generator[A, Any, T], perform: Callable[[A], Any]) -> T:
    """Perform every action with a blocking call; the conversation's result
    (:func:`resume`'s loop, written out: every bus call runs it)."""
    send, throw = conversation.send, conversation.throw
    try:
        action = send(None)
        while True:
            try:
                reply = perform(action)
            except BaseException as exc:  # thrown in: the conversation decides
                action = throw(exc)
            else:
                action = send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def aconverse(
    conversation: Generator[A, Any, T], perform: Callable[[A], Awaitable[Any]]
) -> T:
    """Await every action; the conversation's result."""
    done, out = resume(conversation)
    while not done:
        try:
            reply = await perform(out)
        except BaseException as exc:  # thrown in: the conversation decides
            done, out = resume(conversation, error=exc)
        else:
            done, out = resume(conversation, reply)
    return out  # type: ignore[no-any-return]
