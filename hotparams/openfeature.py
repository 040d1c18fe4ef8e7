"""An OpenFeature provider over a live handle (extra ``openfeature``).

::

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from hotparams.openfeature import HotParamsProvider

    api.set_provider(HotParamsProvider(bus.watch("chat", ChatParams)))
    client = api.get_client()
    client.get_float_value("temperature", 0.7, EvaluationContext(targeting_key="user-42"))

Each parameter of the namespace is a flag of its own type: a ``bool`` field
a boolean flag, ``str`` a string, ``int`` an integer, ``float`` a float
(an integral value too), a list or a model an object.  Resolving reads the
handle's snapshot: no lock, no I/O, so the async resolvers are the sync
ones.

- The evaluation context's ``targeting_key`` is the user id of
  :meth:`Live.for_user <hotparams.Live.for_user>`: a user in an A/B variant
  gets its value with reason ``SPLIT`` and ``variant`` the variant's name;
  everyone else the base, reason ``STATIC``.  Without a targeting key: the
  base.
- ``flag_metadata``: ``namespace``, ``version`` and ``epoch`` of the
  snapshot the value came from.
- Events: ``PROVIDER_CONFIGURATION_CHANGED`` with ``flags_changed`` (the
  fields whose value changed, or that an A/B variant overrides before or
  after) each time the handle applies a change; ``PROVIDER_STALE`` when
  its connection is lost (it serves its last good snapshot), ``PROVIDER_READY``
  when it is back.  They are emitted from a thread of the provider, never
  from the handle's listener.
- Errors, as the SDK's codes: an unknown field ``FLAG_NOT_FOUND`` (a secret
  field is no flag either), a flag read as another type ``TYPE_MISMATCH``.
  A null value resolves to the caller's default (reason ``DEFAULT``).

The provider does not own the handle: close the handle after
``api.shutdown()``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import FlagNotFoundError, TypeMismatchError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from .observer import Observer
from .snapshot import Snapshot

if TYPE_CHECKING:
    from openfeature.flag_evaluation import FlagValueType

    from .handle import Handle

__all__ = ["HotParamsProvider", "changed_flags"]

T = TypeVar("T")
ObjectValue = Sequence["FlagValueType"] | Mapping[str, "FlagValueType"]

#: what a value of each flag type must be (bool is no integer, an int is a float)
_KINDS: dict[str, tuple[type, ...]] = {
    "boolean": (bool,),
    "string": (str,),
    "integer": (int,),
    "float": (int, float),
    "object": (list, tuple, dict),
}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for kind in ("string", "integer", "float", "object"):
        if isinstance(value, _KINDS[kind]):
            return kind
    return type(value).__name__


def changed_flags(old: Snapshot[Any], new: Snapshot[Any]) -> list[str]:
    """The flags whose value may differ for some user between two snapshots:
    changed base values, and the fields an A/B variant overrides in either."""
    names = {
        k for k in old.values.keys() | new.values.keys() if old.values.get(k) != new.values.get(k)
    }
    if old.variants != new.variants:
        for variants in (old.variants, new.variants):
            for variant in variants.variants.values():
                names.update(variant.overrides)
    return sorted(names)


class _Connection(Observer):
    """Tells the provider of the handle's connection changes (in the listener: quick)."""

    def __init__(self, provider: HotParamsProvider) -> None:
        self._provider = provider

    def connection(self, connected: bool) -> None:
        self._provider._events.put(("ready" if connected else "stale", None))


class HotParamsProvider(AbstractProvider):
    """OpenFeature flags from a :class:`hotparams.Live` or
    :class:`hotparams.aio.AsyncLive` (one namespace)."""

    def __init__(self, live: Handle[Any], *, name: str = "hotparams") -> None:
        super().__init__()
        self.live = live
        self._metadata = Metadata(name=name)
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._observer = _Connection(self)

    def get_metadata(self) -> Metadata:
        return self._metadata

    # ------------------------------------------------------------ lifecycle

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Start following the handle (the SDK then reports READY)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._emit_events,
            name=f"hotparams-openfeature-{self.live.namespace}",
            daemon=True,
        )
        self._thread.start()
        self.live.on_change(self._changed)
        self.live.observe(self._observer)
        if not self.live.connected:  # serving a cached or default snapshot
            self._events.put(("stale", None))

    def shutdown(self) -> None:
        """Stop following the handle (which stays open: the caller closes it)."""
        self.live.off_change(self._changed)
        self.live.unobserve(self._observer)
        thread, self._thread = self._thread, None
        if thread is not None:
            self._events.put(("stop", None))
            thread.join(5)

    def _changed(self, old: Snapshot[Any], new: Snapshot[Any]) -> None:
        self._events.put(("changed", (changed_flags(old, new), new)))

    def _emit_events(self) -> None:
        stale = False
        while True:
            kind, payload = self._events.get()
            if kind == "stop":
                return
            if kind == "changed":
                flags, snap = payload
                self.emit_provider_configuration_changed(
                    ProviderEventDetails(flags_changed=flags, metadata=self._flag_metadata(snap))
                )
            elif kind == "stale" and not stale:
                stale = True
                self.emit_provider_stale(
                    ProviderEventDetails(
                        message="Redis unreachable: serving the last good snapshot"
                    )
                )
            elif kind == "ready" and stale:
                stale = False
                self.emit_provider_ready(ProviderEventDetails(message="in sync again"))

    # ------------------------------------------------------------ resolving

    def _flag_metadata(self, snap: Snapshot[Any]) -> dict[str, bool | int | float | str]:
        return {"namespace": snap.namespace, "version": snap.version, "epoch": snap.epoch}

    def _resolve(
        self,
        flag_key: str,
        kind: str,
        default_value: T,
        evaluation_context: EvaluationContext | None,
    ) -> FlagResolutionDetails[T]:
        live = self.live
        if flag_key not in live.schema.rules["fields"] or flag_key in live.schema.secrets:
            raise FlagNotFoundError(f"{live.namespace!r} has no parameter {flag_key!r}")
        user = evaluation_context.targeting_key if evaluation_context is not None else None
        snap = live.for_user(user) if user else live.current
        metadata = self._flag_metadata(snap)
        value: Any = snap.values.get(flag_key)
        if value is None:
            return FlagResolutionDetails(
                value=default_value, reason=Reason.DEFAULT, flag_metadata=metadata
            )
        if not isinstance(value, _KINDS[kind]) or (kind != "boolean" and isinstance(value, bool)):
            raise TypeMismatchError(
                f"{flag_key!r} is a {_json_kind(value)} parameter, not a {kind} flag"
            )
        if kind == "float":
            value = float(cast(float, value))
        elif kind == "object" and isinstance(value, tuple):
            value = list(value)
        reason = Reason.SPLIT if snap.variant is not None else Reason.STATIC
        return FlagResolutionDetails(
            value=value, reason=reason, variant=snap.variant, flag_metadata=metadata
        )

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, "boolean", default_value, evaluation_context)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, "string", default_value, evaluation_context)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, "integer", default_value, evaluation_context)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, "float", default_value, evaluation_context)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        return self._resolve(flag_key, "object", default_value, evaluation_context)
