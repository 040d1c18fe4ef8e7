"""The public names are a contract: extend, don't rename."""

from __future__ import annotations

import hotparams

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


def test_every_bus_method_has_an_asyncio_twin_with_the_same_parameters() -> None:
    import inspect

    from hotparams.aio import AsyncBus

    sync_only = {"close", "run", "execute", "load_library", "masked_values"}
    for name, method in vars(hotparams.Bus).items():
        if name.startswith("_") or name in sync_only or not callable(method):
            continue
        twin = getattr(AsyncBus, name, None)
        assert twin is not None, f"AsyncBus.{name} is missing"
        assert inspect.iscoroutinefunction(twin), f"AsyncBus.{name} is not async"
        params = list(inspect.signature(method).parameters)
        assert list(inspect.signature(twin).parameters) == params, name
