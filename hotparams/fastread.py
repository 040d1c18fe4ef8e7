"""Field reads on the served models at the cost of a plain attribute (CPython 3.11).

CPython 3.11 specialises an attribute read (``LOAD_ATTR``) only on objects
whose type has the generic attribute hook (``tp_getattro`` =
``PyObject_GenericGetAttr``).  pydantic's ``BaseModel`` defines
``__getattr__`` (for private attributes and extra fields), so every model
class gets the hook that calls it after a miss, and each
``snap.params.temperature`` takes the slow, generic lookup: 3-4x a plain
attribute read.  CPython 3.12 specialises such reads itself.

For a model without private attributes, without extra fields and without an
attribute hook of its own, that ``__getattr__`` has nothing to do: a field
is in the instance's ``__dict__``, anything else is on the class, and a
missing name raises the same ``AttributeError``.  :func:`generic_reads` gives
such a class (one hotparams generated, see :mod:`hotparams.schema`) the
generic hook back, so reads of its fields are specialised; instances stay
instances of the model, with every pydantic method.  Anything it cannot
verify (another interpreter or version, an unexpected type layout) leaves the
class as it is: reads are then correct, only slower.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from pydantic import BaseModel

__all__ = ["generic_reads", "reads_are_generic"]

#: words before ``tp_getattro`` in a PyTypeObject: PyObject_VAR_HEAD (3),
#: tp_name ... tp_str (15); checked against ``object`` before any write
_GETATTRO_WORD = 18
_WORD = ctypes.sizeof(ctypes.c_void_p)


def _generic() -> int | None:
    return ctypes.cast(ctypes.pythonapi.PyObject_GenericGetAttr, ctypes.c_void_p).value


def _slot(cls: type) -> ctypes.c_void_p:
    return ctypes.c_void_p.from_address(id(cls) + _GETATTRO_WORD * _WORD)


def _supported() -> bool:
    """CPython 3.11 (3.12 specialises reads past ``__getattr__`` itself), with
    the type layout this module expects."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return False
    generic = _generic()
    return generic is not None and _slot(object).value == generic


def _needs_getattr(cls: type[BaseModel]) -> bool:
    """Whether pydantic's ``__getattr__`` (or one of the class's own) has work to do."""
    if cls.__private_attributes__ or cls.model_config.get("extra") == "allow":
        return True
    if cls.__getattribute__ is not object.__getattribute__:
        return True
    return any("__getattr__" in vars(klass) for klass in cls.__mro__ if klass is not BaseModel)


def generic_reads(cls: type[BaseModel]) -> bool:
    """Give ``cls`` the generic attribute hook when its ``__getattr__`` is
    never needed (see the module docstring); True if its reads are now generic.

    Only for a class hotparams made and nobody else derives from.
    """
    if reads_are_generic(cls):
        return True
    if not _supported() or _needs_getattr(cls) or cls.__subclasses__():
        return False
    _slot(cls).value = _generic()
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(cls))
    return True


def reads_are_generic(cls: type[Any]) -> bool:
    """True when CPython 3.11 can specialise attribute reads on instances of ``cls``."""
    return _supported() and _slot(cls).value == _generic()
