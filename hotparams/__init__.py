"""hotparams: live runtime parameters for a fleet of processes, on Redis.

::

    import hotparams
    bus = hotparams.connect("redis://127.0.0.1:6379/0")
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 0.9}, author="ana", reason="warmer replies")
"""

from .bus import Bus, connect
from .checks import Check
from .codec import MASK
from .config import ConfigError, Settings
from .errors import (
    ConnectionFailed,
    HotParamsError,
    InvalidNamespace,
    InvalidParams,
    LibraryMismatch,
    NamespaceNotFound,
    PermissionDenied,
    ProtocolError,
    SchemaError,
    Tombstone,
    VersionConflict,
    VersionNotFound,
)
from .lifecycle import FieldPlan, Migration, NamespaceInfo, NamespaceSettings
from .live import Live, live_changed
from .protocol import Head, Registered
from .schema import AnyParams, ParamSchema
from .snapshot import Change, FieldChange, Snapshot
from .tracker import LiveStatus, Rejected
from .writes import BatchError

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
    "NamespaceInfo",
    "NamespaceNotFound",
    "NamespaceSettings",
    "ParamSchema",
    "PermissionDenied",
    "ProtocolError",
    "Registered",
    "Rejected",
    "SchemaError",
    "Settings",
    "Snapshot",
    "Tombstone",
    "VersionConflict",
    "VersionNotFound",
    "connect",
    "live_changed",
]

__version__ = "0.1.0"
