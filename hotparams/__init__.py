"""hotparams: live runtime parameters for a fleet of processes, on Redis.

::

    import hotparams
    bus = hotparams.connect("redis://127.0.0.1:6379/0")
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 0.9}, author="ana", reason="warmer replies")

The names below the errors are imported on first use (PEP 562), so that
``import hotparams.cli`` or ``hotparams.errors`` does not pay for the live
handles, the metrics or the asyncio twin.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ConnectionFailed,
    HotParamsError,
    InvalidNamespace,
    InvalidParams,
    LibraryMismatch,
    NamespaceDamaged,
    NamespaceNotFound,
    PermissionDenied,
    ProtocolError,
    ReplicationLagging,
    SchemaError,
    Tombstone,
    VersionConflict,
    VersionNotFound,
)

if TYPE_CHECKING:
    from .bus import Bus, connect
    from .checks import Check
    from .codec import MASK
    from .config import ConfigError, Settings
    from .lifecycle import FieldPlan, Migration, NamespaceInfo, NamespaceSettings
    from .live import Live, live_changed
    from .protocol import Head, Registered
    from .schema import AnyParams, ParamSchema
    from .snapshot import Change, FieldChange, Snapshot
    from .status import LiveStatus, Rejected
    from .writes import BatchError

#: public name -> the module that defines it (imported on first use)
_LAZY = {
    "Bus": ".bus",
    "connect": ".bus",
    "Check": ".checks",
    "MASK": ".codec",
    "ConfigError": ".config",
    "Settings": ".config",
    "FieldPlan": ".lifecycle",
    "Migration": ".lifecycle",
    "NamespaceInfo": ".lifecycle",
    "NamespaceSettings": ".lifecycle",
    "Live": ".live",
    "live_changed": ".live",
    "Head": ".protocol",
    "Registered": ".protocol",
    "AnyParams": ".schema",
    "ParamSchema": ".schema",
    "Change": ".snapshot",
    "FieldChange": ".snapshot",
    "Snapshot": ".snapshot",
    "LiveStatus": ".status",
    "Rejected": ".status",
    "BatchError": ".writes",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hotparams' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "MASK",
    "AnyParams",
    "BatchError",
    "Bus",
    "Change",
    "Check",
    "ConfigError",
    "ConnectionFailed",
    "FieldChange",
    "FieldPlan",
    "Head",
    "HotParamsError",
    "InvalidNamespace",
    "InvalidParams",
    "LibraryMismatch",
    "Live",
    "LiveStatus",
    "Migration",
    "NamespaceDamaged",
    "NamespaceInfo",
    "NamespaceNotFound",
    "NamespaceSettings",
    "ParamSchema",
    "PermissionDenied",
    "ProtocolError",
    "Registered",
    "Rejected",
    "ReplicationLagging",
    "SchemaError",
    "Settings",
    "Snapshot",
    "Tombstone",
    "VersionConflict",
    "VersionNotFound",
    "__version__",
    "connect",
    "live_changed",
]
