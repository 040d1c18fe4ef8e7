"""The public names are a contract: extend, don't rename."""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import typing
from typing import Any

import pytest

import hotparams
from hotparams import (
    BatchError,
    Change,
    FieldChange,
    Head,
    Migration,
    NamespaceInfo,
    NamespaceSettings,
    Registered,
    Snapshot,
)
from hotparams.fleet import Convergence, WorkerReport
from hotparams.protocol import Stored
from hotparams.variants import Variant, VariantSet
from hotparams.writes import Committed

CONTRACT = {
    "Bus",
    "ConnectionFailed",
    "HotParamsError",
    "InvalidParams",
    "Snapshot",
    "VersionConflict",
    "connect",
}


def test_the_public_names_of_the_design_are_exported() -> None:
    assert set(hotparams.__all__) >= CONTRACT
    for name in hotparams.__all__:
        assert hasattr(hotparams, name), name


def test_every_error_is_a_hotparams_error() -> None:
    errors = [
        getattr(hotparams, n)
        for n in hotparams.__all__
        if isinstance(getattr(hotparams, n), type)
        and issubclass(getattr(hotparams, n), BaseException)
    ]
    assert len(errors) >= 8
    assert all(issubclass(e, hotparams.HotParamsError) for e in errors)


def test_bus_has_the_design_methods() -> None:
    for method in ("register", "set", "get", "history", "rollback"):
        assert callable(getattr(hotparams.Bus, method))


# ---------------------------------------------------------------- every public module

#: each public module's names (extend, never rename: a name may be added
#: here, never removed)
PUBLIC = {
    "hotparams": {
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
        "MASK",
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
        "SchemaError",
        "Settings",
        "Snapshot",
        "Tombstone",
        "VersionConflict",
        "VersionNotFound",
        "__version__",
        "connect",
        "live_changed",
    },
    "hotparams.aio": {"AsyncBus", "AsyncLive", "connect"},
    "hotparams.flask": {
        "AdminAPI",
        "EXTENSION_KEY",
        "HotParams",
        "HotParamsState",
        "current_snapshot",
        "params",
        "params_changed",
        "state_of",
    },
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_module_keeps_its_names(module: str) -> None:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    assert len(names) == len(set(names)), f"{module}.__all__ names one twice"
    missing = PUBLIC[module] - set(names)
    assert not missing, f"{module}.__all__ lost {sorted(missing)}"
    for name in names:
        assert hasattr(mod, name), f"{module}.{name}"


def test_the_public_values_live_where_hotparams_says() -> None:
    from hotparams.status import LiveStatus, Rejected

    assert hotparams.LiveStatus is LiveStatus and hotparams.Rejected is Rejected


# ---------------------------------------------------------------- return types


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


#: public method -> its return type, the same for Bus and AsyncBus
RETURNS: dict[str, Any] = {
    "check": int,
    "configure": NamespaceSettings,
    "convergence": Convergence,
    "diff": dict[str, FieldChange],
    "exposures": dict[str | None, int],
    "fleet": tuple[int, list[WorkerReport]],
    "get": Snapshot[Any],
    "head": Head,
    "history": list[Change],
    "migrate": Migration,
    "namespaces": list[NamespaceInfo],
    "register": Registered,
    "rollback": int,
    "set": int,
    "set_many": list[int],
    "set_variant": int,
    "unset": int,
    "variants": VariantSet,
    "workers": list[WorkerReport],
}


@pytest.mark.parametrize("method", sorted(RETURNS))
def test_the_public_methods_keep_their_return_types(method: str) -> None:
    from hotparams.aio import AsyncBus

    for cls in (hotparams.Bus, AsyncBus):
        returns = typing.get_type_hints(getattr(cls, method))["return"]
        if typing.get_origin(returns) is collections.abc.Generator:  # an operation: Op[T]
            returns = typing.get_args(returns)[2]
        assert returns == RETURNS[method], f"{cls.__name__}.{method}"


def test_the_returned_values_keep_their_fields() -> None:
    assert _fields(Convergence) >= {
        "namespace",
        "target",
        "workers",
        "on_target",
        "behind",
        "disconnected",
        "lag_p50_ms",
        "lag_p99_ms",
        "lag_max_ms",
    }
    assert _fields(WorkerReport) >= {
        "id",
        "namespace",
        "version",
        "epoch",
        "host",
        "pid",
        "name",
        "user",
        "connected",
        "committed_ms",
        "applied_ms",
        "lag_ms",
        "confirmed_ms",
        "last_error",
        "started_ms",
        "digest",
        "reported_ms",
        "extra",
    }
    assert _fields(VariantSet) >= {"salt", "variants"}
    for method in ("assign", "from_json", "to_json", "build", "with_variant", "without"):
        assert callable(getattr(VariantSet, method)), method
    assert _fields(Committed) >= {"version", "state"}
    results = typing.get_type_hints(BatchError.__init__)["results"]
    assert typing.get_args(results) == (Committed | Exception,)


def test_a_committed_result_never_shows_a_secret_value() -> None:
    """``BatchError.results`` holds Committed objects: neither their repr
    nor the error's message may hold the values they committed."""
    secret = "sk-committed-SECRET-9"
    variants = VariantSet.build(
        "salt", [Variant("vip", {"api_key": secret}, ((0, 100),), frozenset({"ann"}))]
    )
    state = Stored(
        namespace="creds",
        version=4,
        epoch="e1",
        committed_ms=1,
        schema_rev=1,
        raw={"api_key": f'"{secret}"'},
        variants=variants.to_json(),
    )
    committed = Committed(4, state)
    error = BatchError([committed, hotparams.VersionConflict("other", 1, 2)])
    for text in (repr(committed), str(committed), repr(error.results), str(error), repr(error)):
        assert secret not in text
    assert "version=4" in repr(committed)
