"""The public methods of both buses, written once.

Every public method of :class:`~hotparams.Bus` and
:class:`~hotparams.aio.AsyncBus` is an I/O-free operation of
:class:`~hotparams.core.BusCore` (a generator of calls, see
:mod:`hotparams.protocol`) made a method by :class:`operation`.  On a Bus
it runs the operation and returns the result; on an AsyncBus it returns a
coroutine of the result.  The signature, the docstring and the checks of
the arguments exist once, in the operation::

    class BusCore:
        @operation
        def head(self, namespace: str) -> Op[Head]:
            \"\"\"The current version, epoch and commit time.\"\"\"
            return (yield from head_op(keys_for(namespace)))

    bus.head("chat")           # Bus: a Head
    await abus.head("chat")    # AsyncBus: a Head
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Generator
from types import MethodType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    from .aio import AsyncBus
    from .bus import Bus

__all__ = ["operation"]

P = ParamSpec("P")
T = TypeVar("T")


class operation(Generic[P, T]):
    """A bus method made of an operation: ``bus.<name>(...)`` is
    ``bus.run(op(bus, ...))``.  ``raw`` operations (the library's own
    install and check) skip the library check that ``run`` makes."""

    def __init__(
        self, op: Callable[Concatenate[Any, P], Generator[Any, Any, T]], *, raw: bool = False
    ) -> None:
        self.op = op
        self.raw = raw
        self.name = op.__name__
        functools.update_wrapper(self, op)
        self.__signature__ = inspect.signature(op)

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, bus: None, owner: type[Any] | None = None) -> operation[P, T]: ...

    @overload
    def __get__(self, bus: Bus, owner: type[Any] | None = None) -> Callable[P, T]: ...

    @overload
    def __get__(
        self, bus: AsyncBus, owner: type[Any] | None = None
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, bus: Any, owner: type[Any] | None = None) -> Any:
        return self if bus is None else MethodType(self, bus)

    def __call__(self, bus: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the operation on ``bus`` (``Bus.<name>(bus, ...)``, as with any method)."""
        run = bus.drive if self.raw else bus.run
        return run(self.op(bus, *args, **kwargs))
